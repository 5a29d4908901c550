"""Checkpoints: round trip of the card and rejection of anything that is not exactly a checkpoint."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from ferlib.classes import FER7
from ferlib.errors import ModelFileError
from ferlib.inference.checkpoint import FORMAT, card_spec, checkpoint_paths, load_checkpoint, make_card, save_checkpoint
from ferlib.inputs import InputSpec
from ferlib.models import create_model


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("landmark_cnn1d", num_classes=7)
    spec = InputSpec(kind="landmarks", method="minmax", subset="lips")
    w, c = save_checkpoint(model, tmp_path / "m", make_card(model, FER7, spec, training={"epochs": 1},
                                                            data={"names": ["synthetic"]}))
    return model, w, c


def _edit_card(path, **changes):
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_card_contents_and_paths(ckpt, tmp_path):
    model, w, c = ckpt
    assert (w, c) == checkpoint_paths(tmp_path / "m") == checkpoint_paths(tmp_path / "m.json")
    card = json.loads(c.read_text())
    assert card["format"] == FORMAT and card["classes"] == list(FER7)
    assert card["model"] == {"name": "landmark_cnn1d", "kwargs": model.hparams}
    assert len(card["weights_sha256"]) == 64
    loaded, card2 = load_checkpoint(c)
    assert card_spec(card2) == InputSpec(kind="landmarks", method="minmax", subset="lips")
    assert not loaded.training
    assert not list(tmp_path.glob(".*tmp")), "no temp files left behind"


def test_missing_files(ckpt, tmp_path):
    _, w, c = ckpt
    with pytest.raises(ModelFileError, match="does not exist"):
        load_checkpoint(tmp_path / "other")
    c.unlink()
    with pytest.raises(ModelFileError, match=r"m\.json does not exist"):
        load_checkpoint(w)


def test_pickle_renamed_to_safetensors_is_refused(ckpt):
    model, w, _ = ckpt
    torch.save(model.state_dict(), w)
    with pytest.raises(ModelFileError, match="pickle"):
        load_checkpoint(w)
    w.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ModelFileError, match="pickle"):
        load_checkpoint(w)


def test_truncated_and_foreign_files(ckpt):
    _, w, _ = ckpt
    blob = w.read_bytes()
    w.write_bytes(blob[:-100])
    with pytest.raises(ModelFileError, match="truncated"):
        load_checkpoint(w)
    w.write_bytes(blob[:5])
    with pytest.raises(ModelFileError, match="truncated"):
        load_checkpoint(w)
    w.write_bytes(b"this is a text file, not weights at all" * 10)
    with pytest.raises(ModelFileError, match="safetensors"):
        load_checkpoint(w)


def test_tampered_weights_fail_the_hash(ckpt):
    _, w, _ = ckpt
    blob = bytearray(w.read_bytes())
    blob[-3] ^= 0xFF
    w.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="tampered"):
        load_checkpoint(w)


def test_bad_cards(ckpt):
    _, _, c = ckpt
    good = c.read_text()
    cases = [({"model": {"name": "no_such_model", "kwargs": {}}}, "unknown model 'no_such_model'"),
             ({"classes": ["happy", "sad"]}, "2 names but the model has 7 outputs"),
             ({"classes": ["angry", "disgust", "fear", "joyful", "neutral", "sad", "surprise"]}, "joyful"),
             ({"classes": ["happy"] * 7}, "repeated"),
             ({"version": 99}, "version 99 is not supported"),
             ({"format": "something-else"}, "format"),
             ({"input": {"kind": "smell"}}, "input kind 'smell'")]
    for change, message in cases:
        c.write_text(good)
        _edit_card(c, **change)
        with pytest.raises(ModelFileError, match=message):
            load_checkpoint(c)
    c.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_checkpoint(c)
    c.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelFileError, match="not a ferlib checkpoint"):
        load_checkpoint(c)


def test_mismatched_shapes_are_refused(ckpt, tmp_path):
    _, w, c = ckpt
    other = create_model("landmark_cnn1d", num_classes=7, hidden=128)
    ow, oc = save_checkpoint(other, tmp_path / "other", make_card(other, FER7, InputSpec()))
    # the card says hidden=256, the weights are hidden=128, and the hash matches those weights
    _edit_card(oc, model=json.loads(c.read_text())["model"])
    with pytest.raises(ModelFileError, match="shape mismatches"):
        load_checkpoint(oc)


def test_save_refuses_class_count_mismatch(tmp_path):
    model = create_model("image_cnn", num_classes=3)
    with pytest.raises(ModelFileError, match="3 outputs"):
        save_checkpoint(model, tmp_path / "x", make_card(model, FER7, InputSpec(kind="image")))
    assert not list(tmp_path.iterdir())


def test_card_pins_the_canonical_face(tmp_path):
    """A landmark model trained on another canonical face is refused, not silently mis-normalised."""
    import json

    import pytest

    from ferlib.classes import FER7
    from ferlib.errors import ModelFileError
    from ferlib.faces.normalize import canonical_face_sha256
    from ferlib.inference.checkpoint import load_checkpoint, make_card, save_checkpoint
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model

    m = create_model("landmark_cnn1d", num_classes=7)
    card = make_card(m, FER7, spec_for_model(m))
    assert card["canonical_face_sha256"] == canonical_face_sha256()
    _, cpath = save_checkpoint(m, tmp_path / "lm", card)
    load_checkpoint(cpath)
    saved = json.loads(cpath.read_text())
    saved["canonical_face_sha256"] = "0" * 64
    cpath.write_text(json.dumps(saved))
    with pytest.raises(ModelFileError, match="canonical face"):
        load_checkpoint(cpath)
