"""Train an image model on FER2013 (Training; early stopping on PublicTest) and test it on PrivateTest.

    nice -n 10 .venv/bin/python scripts/train_image_baseline.py --epochs 25 \
        > runs/image_cnn.log 2>&1

Reads the 48x48 jpgs straight from ../shared/data/fer2013.zip into memory, writes the checkpoint
(models/<name>.safetensors + .json card with test metrics) and a run folder runs/<name>/.
`--bench 2000` instead times one training epoch of each candidate architecture on a 2,000-image
sample and prints seconds per epoch scaled to the full 28,709-image training set.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferlib.checkpoint import make_card, save_checkpoint  # noqa: E402
from ferlib.classes import FER7, index_of  # noqa: E402
from ferlib.data.importers import import_fer2013, read_image  # noqa: E402
from ferlib.evaluate import evaluate, save_metrics  # noqa: E402
from ferlib.inputs import InputSpec, TensorSet  # noqa: E402
from ferlib.models import count_parameters, create_model  # noqa: E402
from ferlib.train import TrainConfig, train  # noqa: E402

CANDIDATES = [("image_cnn", {"width": 32}), ("image_cnn", {"width": 48}), ("image_cnn", {"width": 64}),
              ("resnet18_attention", {"width": 16}), ("resnet18_attention", {"width": 32})]


def load_split(df, split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rows = df[df["split"] == split]
    if limit:
        rows = rows.sample(n=min(limit, len(rows)), random_state=0)
    crops = np.stack([cv2.cvtColor(read_image(p, 48), cv2.COLOR_BGR2GRAY) for p in rows["path"]])
    labels = np.array([index_of(c, FER7) for c in rows["label"]], dtype=np.int64)
    return crops, labels


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bench(df, n: int, threads: int) -> None:
    spec = InputSpec(kind="image")
    crops, labels = load_split(df, "train", n)
    data = TensorSet.build(spec, labels, crops=crops)
    val = data.subset(torch.arange(min(256, n)))
    for name, kw in CANDIDATES:
        torch.manual_seed(0)
        model = create_model(name, num_classes=7, **kw)
        t = time.perf_counter()
        train(model, data, val, TrainConfig(epochs=1, patience=0, num_threads=threads))
        dt = time.perf_counter() - t
        print(f"{name} {kw}: {count_parameters(model) / 1e6:.2f}M params, {dt:.1f} s / {n} images "
              f"-> {dt * 28709 / n / 60:.1f} min per FER2013 epoch ({threads} thread)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013.zip")
    ap.add_argument("--model", default="image_cnn")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--name", default="image_cnn_fer2013")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", default="linear")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench", type=int, default=0, help="time candidates on this many images and exit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df = import_fer2013(args.data)
    if args.bench:
        bench(df, args.bench, args.threads)
        return
    t0 = time.perf_counter()
    spec = InputSpec(kind="image", image_size=48)
    sets = {}
    for split in ("train", "val", "test"):
        crops, labels = load_split(df, split)
        sets[split] = TensorSet.build(spec, labels, crops=crops)
    print(f"loaded {', '.join(f'{k} {len(v)}' for k, v in sets.items())} in {time.perf_counter() - t0:.0f} s",
          flush=True)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(FER7), width=args.width)
    config = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                         schedule=args.schedule, label_smoothing=args.label_smoothing, seed=args.seed,
                         num_threads=args.threads, tta_flip=True)
    print(f"{args.model} width {args.width}: {count_parameters(model)} params; {config}", flush=True)

    def log(ev: dict) -> None:
        if ev["event"] != "step":
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items()), flush=True)
        elif ev["step"] % 100 == 0:
            print(f"  epoch {ev['epoch']} step {ev['step']}/{ev['steps']} loss {ev['train_loss']:.4f} "
                  f"{ev['elapsed_s']:.0f} s", flush=True)

    run_dir = ROOT / "runs" / args.name
    result = train(model, sets["train"], sets["val"], config, callback=log, run_dir=run_dir)
    metrics = evaluate(model, data=sets["test"], classes=FER7, tta_flip=True)
    save_metrics(metrics, run_dir / "test_metrics.json")
    print(f"PrivateTest accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} "
          f"(best epoch {result.best_epoch}, val acc {result.best['val_acc']:.4f})", flush=True)
    card = make_card(model, FER7, spec,
                     training={"config": config.to_dict(), "epochs_run": result.epochs_run,
                               "best_epoch": result.best_epoch, "elapsed_s": result.elapsed_s,
                               "command": " ".join(["python", "scripts/train_image_baseline.py", *sys.argv[1:]])},
                     data={"names": ["fer2013"], "file": args.data.name, "sha256": sha256(args.data),
                           "splits": {"train": "Training", "val": "PublicTest", "test": "PrivateTest"},
                           "n": {k: len(v) for k, v in sets.items()}},
                     metrics={"val": result.best, "test": {k: metrics[k] for k in (
                         "accuracy", "macro_f1", "accuracy_all", "detection_rate", "per_class",
                         "confusion")}, "test_note": "official PrivateTest as it is, test-time flip averaging"})
    paths = save_checkpoint(model, ROOT / "models" / args.name, card)
    print(f"saved {paths[0]} and {paths[1]}", flush=True)


if __name__ == "__main__":
    main()
