"""FER+ (label distributions): the importer's reference rule, soft targets through prepare, the soft-target
loss, class balance over soft targets, eight classes from a seven-class checkpoint."""
from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ferlib.classes import CLASSES, FER7
from ferlib.data import import_ferplus
from ferlib.data.importers import FERPLUS_VOTES, ferplus_label
from ferlib.data.tensors import concat_prepared, detect_kind, import_dataset, one_hot, prepare, soft_targets
from ferlib.errors import InputError
from ferlib.inference.checkpoint import make_card, save_checkpoint
from ferlib.inputs import InputSpec, TensorSet
from ferlib.models import create_model
from ferlib.training.evaluate import mean_recall
from ferlib.training.train import SoftTargetLoss, TrainConfig, class_weights, finetune, train
from tests.helpers import image_task, shared_file

# votes: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
ROWS = {
    "FER2013Train": [
        ("a.png", [6, 0, 0, 3, 0, 0, 0, 0, 1, 0]),  # neutral; the single unknown vote dropped
        ("b.png", [0, 9, 1, 0, 0, 0, 0, 0, 0, 0]),  # happy, soft target all happy (the 1 is an outlier)
        ("c.png", [4, 0, 0, 4, 2, 0, 0, 0, 0, 0]),  # no majority: excluded
        ("d.png", [0, 0, 0, 0, 2, 0, 0, 7, 1, 0]),  # contempt
        ("e.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]),  # not a face
    ],
    "FER2013Valid": [("f.png", [0, 0, 8, 0, 0, 0, 2, 0, 0, 0])],  # surprise
    "FER2013Test": [("g.png", [2, 0, 0, 0, 0, 6, 0, 0, 2, 0]),  # disgust
                    ("h.png", [0, 0, 0, 0, 0, 0, 0, 0, 9, 1])],  # unknown
}


def make_ferplus(root: Path) -> Path:
    """A tiny FER+ layout (random grey 48 px PNGs, not dataset images) under root/ferplus."""
    rng = np.random.default_rng(0)
    for folder, rows in ROWS.items():
        d = root / "ferplus" / folder
        d.mkdir(parents=True)
        lines = []
        for name, votes in rows:
            cv2.imwrite(str(d / name), rng.integers(0, 255, (48, 48), dtype=np.uint8))
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (d / "label.csv").write_text("\n".join(lines) + "\n")
    return root / "ferplus"


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder.parent).as_posix())
    return out


def test_reference_rule_on_single_rows():
    label, target, why = ferplus_label([6, 0, 0, 3, 0, 0, 0, 0, 1, 0])
    assert (label, why) == ("neutral", "")
    assert target is not None
    assert target[CLASSES.index("neutral")] == pytest.approx(6 / 9)
    assert target[CLASSES.index("sad")] == pytest.approx(3 / 9)
    assert target.sum() == pytest.approx(1.0) and len(target) == len(CLASSES) == 8
    assert ferplus_label([4, 0, 0, 4, 2, 0, 0, 0, 0, 0])[::2] == (None, "no majority")
    assert ferplus_label([0, 0, 0, 0, 0, 0, 0, 0, 9, 1])[::2] == (None, "unknown")
    assert ferplus_label([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])[::2] == (None, "no votes")  # every vote an outlier
    assert ferplus_label([0, 0, 0, 0, 0, 0, 0, 7, 0, 3])[0] == "contempt"
    with pytest.raises(InputError):
        ferplus_label([1, 2, 3])


@pytest.mark.parametrize("as_zip", [False, True])
def test_importer_splits_labels_targets_and_exclusions(tmp_path, as_zip):
    root = make_ferplus(tmp_path / "src")
    if as_zip:
        root = zip_folder(root, tmp_path / "ferplus.zip")
    assert detect_kind(root) == "ferplus"
    ds = import_dataset(root)
    df = ds.table.assign(name=ds.table["path"].str.replace("\\", "/").str.rsplit("/", n=1).str[-1])
    df = df.sort_values("name").reset_index(drop=True)
    names = df["name"].tolist()
    assert names == ["a.png", "b.png", "d.png", "f.png", "g.png"]
    assert df["label"].tolist() == ["neutral", "happy", "contempt", "surprise", "disgust"]
    assert df["split"].tolist() == ["train", "train", "train", "val", "test"]
    assert ds.kind == "ferplus" and df["source"].eq("ferplus").all()
    assert df[[f"votes_{v}" for v in FERPLUS_VOTES]].iloc[0].tolist() == [6, 0, 0, 3, 0, 0, 0, 0, 1, 0]
    t = df[[f"t_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(t.sum(1), 1) and t[1, CLASSES.index("happy")] == pytest.approx(1.0)
    assert ds.skipped == {"train: no majority": 1, "train: not a face": 1, "test: unknown": 1}
    assert len(ds.excluded) == 3


def test_importer_errors_name_the_problem(tmp_path):
    root = make_ferplus(tmp_path / "src")
    (root / "FER2013Test" / "g.png").unlink()
    with pytest.raises(InputError, match="g.png is listed but not in FER2013Test"):
        import_ferplus(root)
    bad = make_ferplus(tmp_path / "bad")
    (bad / "FER2013Valid" / "label.csv").write_text('f.png,"(0, 0, 48, 48)",1,2,3\n')
    with pytest.raises(InputError, match="line 1: 5 fields"):
        import_ferplus(bad)
    evil = make_ferplus(tmp_path / "evil")
    (evil / "FER2013Valid" / "label.csv").write_text('../f.png,"(0, 0, 48, 48)",0,0,8,0,0,0,2,0,0,0\n')
    with pytest.raises(InputError, match="not a plain file name"):
        import_ferplus(evil)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not the FER\\+ layout"):
        import_ferplus(tmp_path / "empty")


def test_prepare_carries_soft_targets_over_the_model_classes(tmp_path):
    ds = import_dataset(make_ferplus(tmp_path / "src"))
    spec = InputSpec(kind="image", image_size=48)
    prep = prepare(ds, spec, FER7, drop_unknown=True, cache_dir=tmp_path / "cache", workers=1)
    assert prep.targets is not None and prep.targets.shape == (len(prep), 7)
    assert np.allclose(prep.targets.sum(1), 1)
    row = prep.df.index[prep.df["path"].str.endswith("a.png")][0]
    assert prep.targets[row, FER7.index("neutral")] == pytest.approx(6 / 9)
    ts = prep.tensor_set()
    assert ts.targets is not None and torch.allclose(ts.targets, torch.from_numpy(prep.targets))
    # a hard-label part joins as one-hot rows
    hard = prep.subset(np.arange(len(prep)))
    hard = type(hard)(**{**hard.__dict__, "targets": None})
    both = concat_prepared([prep, hard])
    assert both.targets is not None and np.allclose(both.targets[len(prep):], one_hot(prep.labels, 7))


def test_soft_targets_without_columns_or_mass():
    import pandas as pd
    assert soft_targets(pd.DataFrame({"label": ["happy"]}), np.array([3]), FER7) is None
    df = pd.DataFrame({f"t_{c}": [1.0 if c == "contempt" else 0.0] for c in CLASSES})
    out = soft_targets(df, np.array([FER7.index("angry")]), FER7)  # all its mass on a class the model lacks
    assert out.tolist() == [one_hot(np.array([0]), 7)[0].tolist()]


def test_soft_loss_is_weighted_cross_entropy_for_one_hot_targets():
    torch.manual_seed(0)
    logits, y = torch.randn(12, 8), torch.randint(0, 8, (12,))
    w = torch.rand(8) + 0.5
    onehot = torch.nn.functional.one_hot(y, 8).float()
    weighted = float(torch.nn.CrossEntropyLoss(weight=w)(logits, y))
    assert float(SoftTargetLoss(w)(logits, onehot)) == pytest.approx(weighted, rel=1e-5)
    plain = float(torch.nn.CrossEntropyLoss()(logits, y))
    assert float(SoftTargetLoss()(logits, onehot)) == pytest.approx(plain, rel=1e-5)
    soft = torch.softmax(torch.randn(12, 8), 1)
    manual = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert float(SoftTargetLoss()(logits, soft)) == pytest.approx(float(manual), rel=1e-5)


def test_class_weights_over_soft_mass_and_power():
    labels = torch.tensor([0, 0, 1])
    targets = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    w = class_weights(labels, 3, targets)  # mass 1.5, 1.5, 0
    assert w.tolist() == pytest.approx([1.0, 1.0, 0.0])
    counts = torch.tensor([0] * 9 + [1])
    full, root = class_weights(counts, 2), class_weights(counts, 2, power=0.5)
    assert full[1] / full[0] == pytest.approx(9.0) and root[1] / root[0] == pytest.approx(3.0)
    with pytest.raises(InputError):
        TrainConfig(class_weight_power=2.0)


def test_tensorset_checks_targets():
    ts = image_task(8)
    with pytest.raises(InputError, match="targets must have shape"):
        TensorSet(ts.tensors, ts.labels, ts.spec, torch.ones(7, 3) / 3)
    with pytest.raises(InputError, match="sum to 1"):
        TensorSet(ts.tensors, ts.labels, ts.spec, torch.ones(8, 3))
    sub = TensorSet(ts.tensors, ts.labels, ts.spec, torch.ones(8, 3) / 3).subset([0, 2])
    assert sub.targets is not None and sub.targets.shape == (2, 3)


def test_training_follows_the_targets_not_the_labels():
    """Soft targets that contradict the hard labels: the soft run learns the targets, --hard-labels the labels."""
    tr, va = image_task(240, seed=0), image_task(90, seed=1)
    flipped = torch.nn.functional.one_hot((tr.labels + 1) % 3, 3).float()
    soft_tr = TensorSet(tr.tensors, tr.labels, tr.spec, flipped)
    soft_va = TensorSet(va.tensors, (va.labels + 1) % 3, va.spec)

    def run(config):
        torch.manual_seed(0)
        m = create_model("image_cnn", num_classes=3)
        return train(m, soft_tr, soft_va, config)

    config = TrainConfig(epochs=3, batch_size=32, patience=0, augment=False, monitor="val_recall")
    assert run(config).best["val_recall"] > 0.85
    assert run(TrainConfig(**{**config.to_dict(), "soft_targets": False})).best["val_recall"] < 0.3


def test_mean_recall_is_balanced_accuracy():
    assert mean_recall([0, 0, 0, 1], [0, 0, 1, 1], 3) == pytest.approx((2 / 3 + 1) / 2)
    assert mean_recall([0, 1], [-1, 1], 2) == pytest.approx(0.5)  # a miss counts wrong


def test_finetune_to_eight_classes_keeps_the_seven_rows(tmp_path):
    torch.manual_seed(0)
    model = create_model("image_cnn", num_classes=7)
    save_checkpoint(model, tmp_path / "base", make_card(model, FER7, InputSpec(kind="image", image_size=32)))
    tr, va = image_task(64), image_task(32, seed=1)
    config = TrainConfig(epochs=1, batch_size=32, freeze_backbone=True, lr=1e-12)  # the head barely moves
    ft, card, _ = finetune(tmp_path / "base.json", tr, va, config, classes=list(CLASSES))
    assert card["classes"] == list(CLASSES) and ft.head.out_features == 8
    assert torch.allclose(ft.head.weight[:7], model.head.weight, atol=1e-6)
    assert torch.allclose(ft.head.bias[:7], model.head.bias, atol=1e-6)


@pytest.mark.data
def test_real_ferplus_counts_match_the_reference_rule():
    ds = import_ferplus(shared_file("ferplus.zip"))
    df = ds.table
    assert (df["split"] == "train").sum() == 25045
    test = df[df["split"] == "test"]["label"].value_counts().to_dict()
    assert test == {"neutral": 1083, "happy": 892, "surprise": 394, "sad": 382, "angry": 269, "fear": 86,
                    "disgust": 16, "contempt": 15}
    assert sum(v for k, v in ds.skipped.items() if k.startswith("test")) == 3573 - 3137


def test_fer2013_labels_as_extra_votes(tmp_path):
    """scripts/make_ferplus_fer2013_votes.py: each FER+ Train image matched to its FER2013 JPEG gets K votes
    for FER2013's label; Valid, Test and the images themselves are copied unchanged."""
    import importlib.util
    import sys

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location("make_votes", scripts / "make_ferplus_fer2013_votes.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(scripts))
    rng = np.random.default_rng(1)
    data = tmp_path / "shared" / "data"
    folder = make_ferplus(tmp_path / "fp")
    fer = tmp_path / "fe" / "fer2013"
    fer2013_label = {"a.png": "sad", "b.png": "happy", "c.png": "sad", "d.png": "angry", "e.png": "neutral"}
    for name, label in fer2013_label.items():  # smooth faces-to-be: the same pixels in both sets
        img = cv2.GaussianBlur(rng.integers(0, 255, (48, 48)).astype(np.uint8), (0, 0), 3)
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
        cv2.imwrite(str(folder / "FER2013Train" / name), img)
        (fer / "Training" / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(fer / "Training" / label / f"Training_{name[0]}.jpg"), img)
    (fer / "PublicTest" / "happy").mkdir(parents=True)
    cv2.imwrite(str(fer / "PublicTest" / "happy" / "PublicTest_1.jpg"), np.full((48, 48), 99, np.uint8))
    data.mkdir(parents=True)
    zip_folder(folder, data / "ferplus.zip")
    zip_folder(fer, data / "fer2013.zip")
    out = tmp_path / "ferplus_v3.zip"
    assert mod.main(["--shared", str(tmp_path / "shared"), "--votes", "3", "--out", str(out)]) == 0
    before, after = import_ferplus(data / "ferplus.zip"), import_ferplus(out)
    b = before.table.set_index(before.table["path"].str.rsplit("/", n=1).str[-1])
    a = after.table.set_index(after.table["path"].str.rsplit("/", n=1).str[-1])
    assert "a.png" not in a.index  # 6 neutral + 6 sad (3 of them FER2013's): no majority any more
    assert a.loc["b.png", "votes_happiness"] == 12 and a.loc["b.png", "t_happy"] == 1
    assert a.loc["c.png", "label"] == "sad"  # 4 neutral, 4 + 3 sad, 2 angry: FER2013's label decides
    assert a.loc["d.png", "label"] == "contempt" and a.loc["d.png", "t_angry"] == pytest.approx(5 / 12)
    assert "e.png" not in a.index  # still not a face
    for name in ("f.png", "g.png"):  # Valid and Test keep FER+'s votes
        assert a.loc[name].filter(like="votes_").tolist() == b.loc[name].filter(like="votes_").tolist()
    with zipfile.ZipFile(data / "ferplus.zip") as z1, zipfile.ZipFile(out) as z2:
        assert sorted(z1.namelist()) == sorted(z2.namelist())
        assert all(z1.read(n) == z2.read(n) for n in z1.namelist() if n.endswith(".png"))
    with pytest.raises(SystemExit):  # the name decides the kind
        mod.main(["--shared", str(tmp_path / "shared"), "--out", str(tmp_path / "votes.zip")])
