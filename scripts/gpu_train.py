"""One short training on a CUDA GPU, and the compact FER2013 copy it trains on.

Here (no GPU needed), build the copy, which travels to a GPU machine that cannot see ../shared:

    .venv/bin/python scripts/gpu_train.py --pack            # -> data/fer2013_compact.npz (about 38 MB)

On a machine with one CUDA GPU (a python3 with torch, numpy, opencv, pandas and safetensors; the
repository as the working directory):

    python3 scripts/gpu_train.py --data data/fer2013_compact.npz --json gpu_train.json

trains `resnet18_attention` (width 64, the standard ResNet18) with --device cuda (bf16 autocast) and
prints the time per epoch, the total time and the accuracy on PublicTest (validation) and
PrivateTest (test, flip TTA). The copy holds the FER2013 images as the CLI's image models see them
(grey 48x48 uint8, ferlib's own reader), labels as FER7 indices, PublicTest and PrivateTest whole and
a seeded random --max-train share of Training (all 28709 would be about 66 MB after compression,
too big to travel beside the repository).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferlib.classes import FER7  # noqa: E402
from ferlib.errors import InputError  # noqa: E402
from ferlib.fsutil import atomic_write_bytes  # noqa: E402
from ferlib.inputs import TensorSet, spec_for_model  # noqa: E402
from ferlib.models import count_parameters, create_model  # noqa: E402
from ferlib.training.evaluate import evaluate, predict_outputs  # noqa: E402
from ferlib.training.train import TrainConfig, train  # noqa: E402

DEFAULT_ZIP = ROOT.parent / "shared" / "data" / "fer2013.zip"
DEFAULT_PACK = ROOT / "data" / "fer2013_compact.npz"
SPLITS = ("train", "val", "test")  # FER2013 Training, PublicTest, PrivateTest


# ----------------------------------------------------------------------------- the compact copy
def grey48(path: str) -> np.ndarray:
    """One FER2013 sample as image models see it: ferlib's reader, grey, 48x48 uint8 (extract_crops'
    "image" mode for small images)."""
    from ferlib.data.importers import read_image, resize_square

    return resize_square(cv2.cvtColor(read_image(path), cv2.COLOR_BGR2GRAY), 48)


def pack(zip_path, out, max_train: int | None = 10000, seed: int = 0) -> dict:
    """Write the compact copy of a FER2013 zip to `out` (.npz, compressed): `<split>_images`
    (N, 48, 48) uint8 and `<split>_labels` (N,) uint8 FER7 indices for train/val/test, `classes`,
    `source_sha256` and `train_total`. Training is cut to a seeded random `max_train` (None = all).
    Returns a summary (counts, bytes)."""
    # ferlib.data is imported here only: the GPU side needs none of the dataset/landmark stack
    from ferlib.data.importers import import_fer2013
    from ferlib.fsutil import sha256_file

    df = import_fer2013(zip_path).table
    arrays: dict[str, np.ndarray] = {"classes": np.array(FER7), "source_sha256": np.array(sha256_file(zip_path))}
    counts = {}
    for split in SPLITS:
        rows = df[df["split"] == split]
        if rows.empty:
            raise InputError(f"{zip_path}: no {split!r} rows; not the FER2013 layout")
        if split == "train":
            arrays["train_total"] = np.array(len(rows))
            if max_train is not None and len(rows) > max_train:
                keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_train, replace=False))
                rows = rows.iloc[keep]
        arrays[f"{split}_images"] = np.stack([grey48(p) for p in rows["path"]])
        arrays[f"{split}_labels"] = np.array([FER7.index(c) for c in rows["label"]], dtype=np.uint8)
        counts[split] = len(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = _npz_bytes(arrays)
    atomic_write_bytes(out, buf)
    return {"out": str(out), "counts": counts, "train_total": int(arrays["train_total"]), "bytes": len(buf)}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz of `arrays` as bytes."""
    f = io.BytesIO()
    np.savez_compressed(f, **arrays)
    return f.getvalue()


def load_pack(path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(classes, {split: (images, labels)}) of a compact copy written by pack()."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no compact copy here; build it with scripts/gpu_train.py --pack "
                         "and carry it to this machine")
    with np.load(p, allow_pickle=False) as z:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in z]
        if missing or "classes" not in z:
            raise InputError(f"{p}: not a compact copy of scripts/gpu_train.py (lacks {missing or ['classes']})")
        return [str(c) for c in z["classes"]], {s: (z[f"{s}_images"], z[f"{s}_labels"].astype(np.int64))
                                                for s in SPLITS}


# ----------------------------------------------------------------------------- the GPU run
def tensor_sets(model, splits: dict) -> dict[str, TensorSet]:
    """The model's TensorSets of every split (build_batch of the grey crops)."""
    spec = spec_for_model(model)
    return {s: TensorSet.build(spec, labels, crops=images) for s, (images, labels) in splits.items()}


def _log_epoch(ev: dict) -> None:
    if ev["event"] == "epoch":
        print(f"epoch {ev['epoch']}: train_loss {ev['train_loss']:.4f} val_loss {ev['val_loss']:.4f} "
              f"val_acc {ev['val_acc']:.4f} ({ev['elapsed_s']:.1f} s)", flush=True)


def heldout_accuracy(model, data: TensorSet, classes, device: str) -> dict:
    """Accuracy and macro F1 on `data` with flip TTA, predicted on `device` (the model ends on the CPU)."""
    model.to(device)
    try:
        probs = predict_outputs(model, data, tta_flip=True)
    finally:
        model.to("cpu")
    m = evaluate(probs.numpy(), data.labels.numpy(), classes)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": m["n"]}


def run(args) -> dict:
    """Train args.model on the compact copy on args.device; returns (and prints) times and accuracies."""
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adamw", lr=args.lr,
                         schedule="cosine", weight_decay=0.01, label_smoothing=0.1, class_weights=False,
                         tta_flip=True, patience=0, seed=args.seed, device=args.device).resolved()
    classes, splits = load_pack(args.data)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(classes), **json.loads(args.model_kw))
    sets = tensor_sets(model, splits)
    gpu = torch.cuda.get_device_name() if config.device == "cuda" else "none"
    print(f"torch {torch.__version__}, device {config.device} (GPU: {gpu}); {args.model} "
          f"{count_parameters(model)} parameters; samples { {k: len(v) for k, v in sets.items()} }", flush=True)
    if config.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 48x48 batches
    t0 = time.perf_counter()
    result = train(model, sets["train"], sets["val"], config, callback=_log_epoch)
    train_s = time.perf_counter() - t0
    test = heldout_accuracy(model, sets["test"], classes, config.device)
    report = {"model": args.model, "model_kw": json.loads(args.model_kw), "device": result.device, "gpu": gpu,
              "torch": torch.__version__, "epochs": result.epochs_run, "batch_size": config.batch_size,
              "n": {k: len(v) for k, v in sets.items()}, "train_s": train_s,
              "s_per_epoch": train_s / max(result.epochs_run, 1),
              "train_samples_per_s": len(sets["train"]) * result.epochs_run / train_s,
              "best_epoch": result.best_epoch, "val_acc": result.best.get("val_acc"),
              "test_acc": test["accuracy"], "test_macro_f1": test["macro_f1"]}
    print(f"trained {result.epochs_run} epochs in {train_s:.1f} s ({report['s_per_epoch']:.2f} s/epoch, "
          f"{report['train_samples_per_s']:.0f} samples/s) on {result.device}; best epoch {result.best_epoch}: "
          f"val (PublicTest) accuracy {report['val_acc']:.4f}; test (PrivateTest, flip TTA) accuracy "
          f"{test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}", flush=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", action="store_true", help="build the compact copy (here) instead of training")
    ap.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="--pack: the FER2013 zip (default ../shared)")
    ap.add_argument("--max-train", type=int, default=10000,
                    help="--pack: Training images kept (seeded random share; 0 = all 28709, about 66 MB)")
    ap.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the compact copy (--pack writes it here)")
    ap.add_argument("--device", default="cuda", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--model", default="resnet18_attention")
    ap.add_argument("--model-kw", default='{"width": 64}', help="JSON keyword arguments of create_model")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.pack:
            info = pack(args.zip, args.data, max_train=args.max_train or None, seed=args.seed)
            print(f"wrote {info['out']}: {info['bytes'] / 1e6:.1f} MB, {info['counts']} images "
                  f"(of {info['train_total']} Training)")
            return 0
        report = run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
