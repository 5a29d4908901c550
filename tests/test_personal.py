"""Personal adaptation (ferlib.training.personal, `ferlib finetune` defaults) on real faces from the committed clip."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from ferlib.cli import main as ferlib_main
from ferlib.errors import InputError
from ferlib.inference.checkpoint import load_checkpoint, resolve_checkpoint
from ferlib.inputs import TensorSet
from ferlib.training.personal import DEFAULT_METHOD, METHODS, AdaptConfig, _prototype_head, adapt_model, check_samples

BASE = "resnet18_attention_fer2013_long"


def _split_clip(clip_dataset: Path, root: Path) -> tuple[Path, Path]:
    """A = the first half of each emotion's frames (the recording), B = the second half (later on)."""
    a, b = root / "A", root / "B"
    for cls_dir in sorted(p for p in clip_dataset.iterdir() if p.is_dir()):
        frames = sorted(cls_dir.glob("*.jpg"))
        half = len(frames) // 2
        for dst, part in ((a, frames[:half]), (b, frames[half:])):
            (dst / cls_dir.name).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copy(f, dst / cls_dir.name / f.name)
    return a, b


def _accuracy(folder: Path, model: str, out: Path) -> float:
    assert ferlib_main(["predict", str(folder), "--model", model, "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False).drop_duplicates("source", keep="first")
    true = [Path(s).parent.name for s in df["source"]]
    return float(((df["detected"] == 1) & (df["label"] == true)).mean())


def test_default_adaptation_improves_a_held_out_later_part(clip_dataset, tmp_path):
    """`ferlib finetune BASE --data A --out M` with no other flag (the new defaults) makes the model
    better on the same person's later frames B than the shipped model it starts from."""
    a, b = _split_clip(clip_dataset, tmp_path / "sets")
    before = _accuracy(b, BASE, tmp_path / "before.csv")
    out = tmp_path / "me"
    assert ferlib_main(["finetune", BASE, "--data", str(a), "--out", str(out),
                        "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run")]) == 0
    _, card = load_checkpoint(out)
    personal = card["training"]["personal"]
    assert personal["config"]["method"] == DEFAULT_METHOD
    assert personal["report"]["per_class"] == {"happy": 8, "sad": 8}
    assert card["training"]["finetuned_from"]["model"]["name"] == "resnet18_attention"
    after = _accuracy(b, str(out), tmp_path / "after.csv")
    assert after > before, (before, after)
    assert after >= 0.9, (before, after)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "full"])
def test_every_embedding_method_changes_only_the_head_and_keeps_classes(clip_dataset, tmp_path, method):
    from ferlib.data.tensors import import_dataset, prepare
    from ferlib.inference.checkpoint import card_spec

    model, card = load_checkpoint(resolve_checkpoint(BASE))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prep = prepare(import_dataset(clip_dataset), card_spec(card), card["classes"], cache_dir=tmp_path)
    report = adapt_model(model, prep.tensor_set(), card["classes"], AdaptConfig(method=method, copies=2))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.weight", "head.bias"}
    assert report["per_class"] == {"happy": 16, "sad": 16} and report["embeddings"] == 4 * 32
    assert set(report["classes_without_samples"]) == set(card["classes"]) - {"happy", "sad"}


def test_prototype_head_is_the_base_plus_scaled_distances_to_the_prototypes():
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 4)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    emb = torch.randn(12, 5)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])  # class 3 has no samples
    with torch.no_grad():
        _prototype_head(head, emb, labels, strength=0.7)
    mu = torch.stack([emb[labels == c].mean(0) for c in range(3)])
    scale = ((emb - mu[labels]) ** 2).sum(1).mean()
    x = torch.randn(6, 5)
    d = -((x[:, None, :] - mu[None]) ** 2).sum(2) * 0.7 / scale  # (6, 3)
    expected = x @ w0.T + b0 + torch.cat([d, d.mean(1, keepdim=True)], 1)
    got = head(x).detach()
    # equal up to a per-row constant (|x|^2 is the same for every class): compare softmaxes
    torch.testing.assert_close(got.softmax(1), expected.softmax(1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("labels, message", [
    ([1, 1, 1], "at least two emotions; got only"),
    ([1], "got 1 sample"),
])
def test_check_samples_rejects_data_a_person_model_cannot_learn_from(labels, message):
    with pytest.raises(InputError, match=message):
        check_samples(torch.tensor(labels), ["a", "b", "c"])


def test_adapt_config_rejects_bad_settings():
    with pytest.raises(InputError, match="method must be one of"):
        AdaptConfig(method="magic")
    with pytest.raises(InputError, match="strength"):
        AdaptConfig(strength=-1)


def _one_class(clip_dataset, root) -> Path:
    shutil.copytree(clip_dataset / "sad", root / "sad")
    return root


def _one_sample(clip_dataset, root) -> Path:
    (root / "sad").mkdir(parents=True)
    shutil.copy(sorted((clip_dataset / "sad").glob("*.jpg"))[0], root / "sad")
    return root


def _with_contempt(clip_dataset, root) -> Path:
    shutil.copytree(clip_dataset / "sad", root / "sad")
    shutil.copytree(clip_dataset / "happy", root / "contempt")
    return root


def _empty(clip_dataset, root) -> Path:
    (root / "sad").mkdir(parents=True)
    return root


@pytest.mark.parametrize("make, message", [
    (_one_class, "at least two emotions"),
    (_one_sample, "at least two emotions|no .*rows|1 sample"),
    (_with_contempt, "contempt"),
    (_empty, "no images|empty|no .*rows"),
])
def test_finetune_bad_data_gives_a_clear_error_and_writes_nothing(clip_dataset, tmp_path, capsys, make, message):
    data = make(clip_dataset, tmp_path / "data")
    out = tmp_path / "out" / "me"
    rc = ferlib_main(["finetune", BASE, "--data", str(data), "--out", str(out),
                      "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_new_classes_need_the_classic_fine_tune(clip_dataset, tmp_path, capsys):
    rc = ferlib_main(["finetune", BASE, "--data", str(clip_dataset), "--out", str(tmp_path / "m"),
                      "--classes", "happy,sad", "--adapt", "head"])
    assert rc == 2 and "--adapt train" in capsys.readouterr().err
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.parametrize("extra, method", [([], DEFAULT_METHOD), (["--freeze-backbone"], "train"),
                                           (["--classes", "happy,sad"], "train")])
def test_adapt_auto_picks_personal_adaptation_for_a_person_and_the_classic_fine_tune_otherwise(
        clip_dataset, tmp_path, capsys, extra, method):
    rc = ferlib_main(["finetune", "landmark_cnn1d_fer2013", "--data", str(clip_dataset),
                      "--out", str(tmp_path / "m"), "--epochs", "1", "--no-save",
                      "--cache-dir", str(tmp_path / "c"), "--run-dir", str(tmp_path / "r"), *extra])
    assert rc == 0
    assert f"--adapt auto: {method} (" in capsys.readouterr().err


def test_tensor_set_without_spec_is_rejected():
    model, card = load_checkpoint(resolve_checkpoint(BASE))
    data = TensorSet({"image": torch.zeros(4, 1, 48, 48)}, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(InputError, match="input spec"):
        adapt_model(model, data, card["classes"])


def test_samples_needed_counts_views_and_what_is_missing():
    from ferlib.training.personal import VIEWS, samples_needed

    samples = pd.DataFrame({"emotion": ["sad", "sad", "sad", "happy", "happy"],
                            "yaw": [0.0, -25.0, 40.0, 3.0, None]})  # no head pose: counts for no view
    guide = samples_needed(samples, ["happy", "sad", "angry"], per_view=2).set_index("emotion")
    assert list(guide.columns) == [*VIEWS, "needed"]
    assert guide.loc["sad", list(VIEWS)].tolist() == [1, 1, 1] and guide.loc["sad", "needed"] == 3
    assert guide.loc["happy", list(VIEWS)].tolist() == [0, 1, 0] and guide.loc["happy", "needed"] == 5
    assert guide.loc["angry", "needed"] == 6
    assert samples_needed(pd.DataFrame(columns=["emotion", "yaw"]), ["sad"])["needed"].tolist() == [6]
