"""Dataset -> model inputs (ferlib.data.tensors) on real frames of the committed clip and real MediaPipe."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ferlib.data import import_image_folder
from ferlib.data.tensors import (
    Prepared,
    concat_prepared,
    dataset_sha256,
    detect_kind,
    ensure_val_split,
    import_dataset,
    prepare,
    split_prepared,
)
from ferlib.errors import InputError
from ferlib.faces.landmarks import face_crop
from ferlib.faces.normalize import SUBSETS, normalize
from ferlib.inputs import InputSpec, TensorSet
from ferlib.store import Store
from ferlib.training.evaluate import evaluate
from ferlib.types import Face

LM = InputSpec(kind="landmarks")
IMG = InputSpec(kind="image", image_size=40)
CLASSES = ("happy", "sad")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def df(clip_dataset):
    return import_dataset(clip_dataset)


@pytest.fixture(scope="module")
def lm_prep(df, cache) -> Prepared:
    return prepare(df, LM, CLASSES, cache_dir=cache, workers=1)


def test_import_dataset_folder_gets_a_stratified_val_split(df, clip_dataset):
    assert df.kind == "folder" and df.root == str(clip_dataset.resolve())
    assert len(df) == 32 and set(df.table["split"]) == {"train", "val"}
    val = df.table[df.table["split"] == "val"]
    assert sorted(val["label"]) == ["happy", "happy", "sad", "sad"]  # round(0.1 * 16) = 2 per class
    again = import_dataset(clip_dataset)
    assert (again.table["split"] == df.table["split"]).all(), "the split is seeded"
    other = import_dataset(clip_dataset, seed=1)
    assert not (other.table["split"] == df.table["split"]).all()


def test_prepare_landmark_inputs(lm_prep):
    p = lm_prep
    assert len(p) == 32 and p.classes == CLASSES and p.crops is None
    assert p.labels.dtype == np.int64 and set(p.labels) == {0, 1}
    assert p.landmarks.shape == (32, 478, 3)
    assert (p.detected == p.face_found).all()
    assert np.isfinite(p.landmarks[p.detected]).all() and np.isnan(p.landmarks[~p.detected]).all()
    assert 0.8 <= p.detection_rate <= 1.0, p.detection_rate  # the hand over the face hides some sad frames
    happy = p.labels == 0
    assert p.detected[happy].all(), "every laughing frame shows a clear face"
    assert np.isfinite(p.poses[p.detected]).all() and np.isnan(p.poses[~p.detected]).all()
    assert (np.abs(p.poses[p.detected]) < 60).all()
    ts = p.tensor_set()
    assert isinstance(ts, TensorSet) and len(ts) == int(p.detected.sum())
    assert ts.tensors["landmarks"].shape[1:] == (3, 102)
    assert (ts.labels.numpy() == p.labels[p.detected]).all()


def test_prepare_image_inputs_need_no_face(df, cache, lm_prep):
    p = prepare(df, IMG, CLASSES, cache_dir=cache, workers=1)
    assert p.crops.shape == (32, 40, 40) and p.crops.dtype == np.uint8
    assert p.detected.all(), "image models read every crop"
    assert (p.face_found == lm_prep.face_found).all()
    assert p.crops.std(axis=(1, 2)).min() > 5, "real image content, not blank crops"
    assert p.tensor_set().tensors["image"].shape == (32, 1, 40, 40)


def test_eval_inputs_count_misses_as_wrong(lm_prep):
    kw = lm_prep.eval_inputs()
    n_det = int(lm_prep.detected.sum())
    probs = np.eye(2)[lm_prep.labels[lm_prep.detected]]  # a perfect classifier on found faces
    m = evaluate(probs, kw["labels"], list(CLASSES), detected_mask=kw["detected_mask"], poses=kw["poses"])
    assert m["accuracy"] == 1.0 and m["accuracy_all"] == pytest.approx(n_det / 32)
    assert "pose_accuracy" in m and len(kw["data"]) == n_det


def test_unknown_labels_are_named_or_dropped(df, cache):
    with pytest.raises(InputError, match=r"'sad' \(16 rows\).*\['happy', 'neutral'\]"):
        prepare(df, LM, ["happy", "neutral"], cache_dir=cache)
    p = prepare(df, LM, ["happy", "neutral"], cache_dir=cache, drop_unknown=True)
    assert len(p) == 16 and p.info["dropped_labels"] == {"sad": 16}
    with pytest.raises(InputError, match="no samples of the model's classes"):
        prepare(df, LM, ["angry", "fear"], cache_dir=cache, drop_unknown=True)


def test_split_subset_and_concat(lm_prep):
    sets = split_prepared(lm_prep)
    assert list(sets) == ["train", "val"] and len(sets["train"]) + len(sets["val"]) == 32
    assert (sets["val"].df["split"] == "val").all() and len(sets["val"].labels) == len(sets["val"].df)
    both = concat_prepared([sets["val"], sets["train"]])
    assert len(both) == 32 and (both.labels[:4] == sets["val"].labels).all()
    with pytest.raises(InputError, match="split labels"):
        split_prepared(lm_prep, lm_prep.df.iloc[:3])
    mixed = prepare(lm_prep.df.iloc[:2], IMG, CLASSES)
    with pytest.raises(InputError, match="same classes and InputSpec"):
        concat_prepared([lm_prep, mixed])


def test_ensure_val_split_keeps_an_existing_one():
    d = pd.DataFrame({"label": ["happy"] * 10 + ["sad"] * 3, "split": [""] * 12 + ["val"]})
    assert ensure_val_split(d)["split"].tolist() == ["train"] * 12 + ["val"]
    d["split"] = ""
    s = ensure_val_split(d, val_frac=0.2)["split"]
    assert (s[:10] == "val").sum() == 2 and (s[10:] == "val").sum() == 1


def test_dataset_kinds_and_errors(tmp_path, clip_dataset):
    assert detect_kind(tmp_path / "fer2013.zip") == "fer2013"
    assert detect_kind(tmp_path / "affectnet_subset.zip") == "affectnet"
    assert detect_kind(tmp_path / "ckplus48.zip") == "ckplus"
    assert detect_kind(tmp_path / "train.csv") == "fer2013-csv"
    assert detect_kind(clip_dataset) == "folder"
    with pytest.raises(InputError, match="no such file or folder"):
        import_dataset(tmp_path / "missing")
    with pytest.raises(InputError, match="kind 'imagenet'"):
        import_dataset(clip_dataset, "imagenet")
    with pytest.raises(InputError, match="not a studio data folder"):
        import_dataset(tmp_path, "studio")
    with pytest.raises(InputError, match="'path' and 'label'"):
        prepare(pd.DataFrame({"x": [1]}), LM, CLASSES)


def test_dataset_sha256_follows_the_files(clip_dataset, tmp_path):
    import shutil

    d = import_dataset(clip_dataset)
    copy = tmp_path / "copy"
    shutil.copytree(clip_dataset, copy)
    c = import_dataset(copy)
    assert dataset_sha256(d) == dataset_sha256(c)
    first = sorted((copy / "happy").iterdir())[0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert dataset_sha256(import_dataset(copy)) != dataset_sha256(d)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, clip_dataset, lm_prep):
    """A real studio store: two sessions of the clip's frames with real landmarks and crops; the
    second is landmarks-only. The sad frames are filed as 'neutral' to give each session a baseline."""
    import cv2

    st = Store(tmp_path_factory.mktemp("studio"))
    p = lm_prep.subset(lm_prep.detected)
    for name, landmarks_only in (("s1", False), ("s2", True)):
        sid = st.create_session(name, landmarks_only=landmarks_only)
        for i, (path, lab) in enumerate(zip(p.df["path"], p.df["label"])):
            bgr = cv2.imread(path)
            crop = face_crop(bgr, Face(p.landmarks[i], (0, 0, 1, 1), 1.0), size=64)
            st.add_sample(sid, "neutral" if lab == "sad" else lab, p.landmarks[i], crop=crop, frame_index=i)
    yield st
    st.close()


def test_studio_recordings(studio, cache):
    df = import_dataset(studio.root)
    assert df.kind == "studio" and set(df.table["split"]) == {"train", "val", "test"}
    classes = ("happy", "neutral")
    p = prepare(df, LM, classes, cache_dir=cache)
    assert p.face_found.all() and p.detected.all() and np.isfinite(p.poses).all()
    img = prepare(df, IMG, classes, cache_dir=cache)
    assert img.info["no_crop"] == len(df) // 2 and len(img) == len(df) // 2
    assert set(img.df["group"]) == {"s1"} and img.crops.shape[1:] == (40, 40)
    sets = split_prepared(p)
    assert set(sets) == {"train", "val", "test"}
    for name, part in sets.items():
        for (g, lab), rows in part.df.groupby(["group", "label"]):
            whole = df.table[(df.table["group"] == g) & (df.table["label"] == lab)].sort_values("frame")
            assert set(rows["frame"]) == set(whole[whole["split"] == name]["frame"]), "chunked split"


def test_subject_conditioning_subtracts_each_sessions_neutral_mean(studio, cache):
    df = import_dataset(studio.root)
    spec = InputSpec(kind="landmarks", subtract_baseline=True)
    p = prepare(df, spec, ("happy", "neutral"), cache_dir=cache)
    assert set(p.baselines) == {"s1", "s2"}
    ts = p.tensor_set()
    plain = prepare(df, LM, ("happy", "neutral"), cache_dir=cache).tensor_set()
    for i in (0, len(df) - 1):  # one row of each session, in row order
        g = p.df["group"].iat[i]
        base = normalize(p.baselines[g], "proposed")  # build_batch normalises the baseline it is given
        expect = plain.tensors["landmarks"][i] - torch.from_numpy(base[list(SUBSETS["default"])].T)
        assert torch.allclose(ts.tensors["landmarks"][i], expect, atol=1e-5)
    happy_only = df.table[df.table["label"] == "happy"]
    happy_only = df.with_table(happy_only)
    with pytest.raises(InputError, match="no neutral samples"):
        prepare(happy_only, spec, ("happy", "neutral"), cache_dir=cache)
    one = prepare(happy_only, spec, ("happy", "neutral"), cache_dir=cache, baseline=p.landmarks[0])
    assert set(one.baselines) == {"*"} and len(one.tensor_set()) == len(happy_only)


def test_folder_rows_of_other_sources_are_plain_importer_frames(clip_dataset, cache):
    """Any importer's DataFrame works, without import_dataset's extras (no split => split '')."""
    raw = import_image_folder(clip_dataset)
    p = prepare(raw, LM, CLASSES, cache_dir=cache)
    assert len(p) == 32 and split_prepared(p) == {}


@pytest.mark.data
@pytest.mark.slow
def test_shared_datasets_import_with_their_splits():
    from tests.helpers import shared_file

    fer = import_dataset(shared_file("fer2013.zip"))
    assert fer.kind == "fer2013"
    assert fer.table["split"].value_counts().to_dict() == {"train": 28709, "val": 3589, "test": 3589}
    ck = import_dataset(shared_file("ckplus48.zip"))
    assert ck.kind == "ckplus" and set(ck.table["split"]) == {"train", "val", "test"}
    subjects = [set(ck.table.loc[ck.table["split"] == s, "subject"]) for s in ("train", "val", "test")]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    classes = ("angry", "contempt", "disgust", "fear", "happy", "sad", "surprise")
    p = prepare(ck, LM, classes)
    assert len(p) == 981 and p.detection_rate > 0.95
    assert len(split_prepared(p)["test"].tensor_set()) > 100
