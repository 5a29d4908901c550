"""The wide model on a CUDA GPU: the shipped default's data and targets, a wider net, many more epochs.

A device machine sees neither ../shared nor the cache, and the whole tree that travels to it, this
compact copy of the training data included, must stay under 64 MiB. Three steps:

1. Here, pack the training data exactly as the default's run prepared it (its input spec and eight
   classes; FER+ vote distributions, CK+ train subjects, the AffectNet subset less its held-out part;
   every dataset's train and val rows, no test rows):

       .venv/bin/python scripts/gpu_train.py --pack          # -> data/gpu_pack.npz, about 47 MB

   The grey 48x48 training crops travel as one JPEG mosaic (quality 95: lossless would be 60 MB; the
   pack records the PSNR), the validation crops as a lossless PNG mosaic, labels and soft targets as
   arrays, and the data card of the run.

2. On the GPU machine (a python3 with torch, numpy, opencv and safetensors; no MediaPipe), with the
   shipped models' weights set aside here first so that tree and pack fit (`mkdir -p /tmp/aside && mv
   models/*.safetensors /tmp/aside/`, and back afterwards):

       PYTHONUNBUFFERED=1 python3 scripts/gpu_train.py --data data/gpu_pack.npz --out $OUT

   trains `resnet18_attention` width 64 (11.2 M parameters) from scratch: SGD lr 0.1, one-cycle, batch
   128, weight decay 5e-4, soft targets with the default's class balance (power 0.5), augmentation,
   bf16 autocast, 60 epochs or --time-limit seconds, whichever ends first (then the best epoch so far).
   The best epoch by validation mean recall (the default's yardstick) is kept; the model reads crops in
   eval mode blurred as the default does (eval_blur 0.45, ferlib.models.blocks.EvalBlur). It writes to --out:
   the card (model.json), the weights cut into parts of at most 15 MiB (model.safetensors.partN; a
   device returns files of at most 16 MiB) and report.json.

3. Here, join the parts into a checkpoint (the card's sha256 is checked) and measure it as users do:

       .venv/bin/python scripts/gpu_train.py --assemble FOLDER --out runs/gpu/model
       .venv/bin/python scripts/fit_eval_blur.py runs/gpu/model --data ... --val-folder ... --write
       scripts/eval_all_sets.sh runs/gpu/model gpu

`--device cpu` runs the same on the CPU (the tests do, on a tiny pack).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferlib.errors import InputError  # noqa: E402
from ferlib.fsutil import atomic_write_bytes, sha256_bytes  # noqa: E402
from ferlib.inference.checkpoint import checkpoint_paths, make_card, save_checkpoint  # noqa: E402
from ferlib.inputs import InputSpec, TensorSet  # noqa: E402
from ferlib.models import count_parameters, create_model  # noqa: E402
from ferlib.training.train import TrainConfig, train  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_SOURCES = (SHARED / "ferplus.zip", SHARED / "ckplus48.zip", ROOT / "cache" / "affectnet_subset_train.zip")
DEFAULT_BASE = "resnet18_attention_ferplus_w32"  # its input spec and classes
DEFAULT_PACK = ROOT / "data" / "gpu_pack.npz"
SPLITS = ("train", "val")
PART_BYTES = 15 * 2 ** 20  # a device returns files of at most 16 MiB
MOSAIC_COLUMNS = 64  # JPEG's widest side is 65,535 px: 64 crops of 48 px across


# ----------------------------------------------------------------------------- the compact copy
def encode_mosaic(crops: np.ndarray, quality: int | None) -> tuple[bytes, float]:
    """(N, S, S) uint8 crops -> (one JPEG of them tiled MOSAIC_COLUMNS across, its PSNR in dB);
    quality None: a PNG (lossless, PSNR inf)."""
    n, s = len(crops), crops.shape[1]
    rows = -(-n // MOSAIC_COLUMNS)
    tiles = np.zeros((rows * MOSAIC_COLUMNS, s, s), np.uint8)
    tiles[:n] = crops
    mosaic = tiles.reshape(rows, MOSAIC_COLUMNS, s, s).transpose(0, 2, 1, 3).reshape(rows * s, MOSAIC_COLUMNS * s)
    ok, buf = (cv2.imencode(".png", mosaic, [cv2.IMWRITE_PNG_COMPRESSION, 9]) if quality is None else
               cv2.imencode(".jpg", mosaic, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]))
    if not ok:
        raise InputError(f"could not encode {n} crops as a mosaic")
    mse = float(np.mean((decode_mosaic(buf.tobytes(), n, s).astype(np.float64) - crops) ** 2))
    return buf.tobytes(), float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def decode_mosaic(blob: bytes, n: int, size: int) -> np.ndarray:
    """The (n, size, size) uint8 crops of a mosaic written by encode_mosaic."""
    mosaic = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mosaic is None or mosaic.shape[1] != MOSAIC_COLUMNS * size or mosaic.shape[0] % size:
        raise InputError("the pack's mosaic does not decode to rows of crops")
    rows = mosaic.shape[0] // size
    tiles = mosaic.reshape(rows, size, MOSAIC_COLUMNS, size).transpose(0, 2, 1, 3).reshape(-1, size, size)
    if len(tiles) < n:
        raise InputError(f"the pack's mosaic holds {len(tiles)} crops, not {n}")
    return np.ascontiguousarray(tiles[:n])


def pack(sources, out, base: str = DEFAULT_BASE, quality: int = 95, workers: int = 1) -> dict:
    """Prepare `sources` with `base`'s input spec and classes as `ferlib finetune` does (train and val
    splits, faces found), and write them to `out` (.npz): per split the crops as one mosaic (train: JPEG at
    `quality`; val: PNG, lossless), labels and soft targets, and `meta` (JSON: spec, classes, the run's data
    card, counts, the training mosaic's PSNR). Returns meta."""
    # the data stack (MediaPipe for large images) is imported here only: the GPU side needs none of it
    from ferlib.data.tensors import import_dataset
    from ferlib.inference.checkpoint import card_spec, read_checkpoint
    from ferlib.training.workflow import PrepareOptions, TrainingData, data_card, prepare_data, training_splits

    _, _, card = read_checkpoint(base)
    spec, classes = card_spec(card), list(card["classes"])
    if not spec.needs_crops or spec.needs_landmarks:
        raise InputError(f"{base}: the pack holds face crops; this model reads {list(spec.keys)}")
    data = TrainingData([import_dataset(s) for s in sources])
    sets = training_splits(prepare_data(data, spec, classes, PrepareOptions(workers=workers)))
    arrays: dict[str, np.ndarray] = {}
    counts, train_psnr = {}, float("nan")
    for split in SPLITS:
        p = sets[split]
        rows = p.detected
        assert p.crops is not None
        # training crops as JPEG (they are resampled by the augmentation anyway); validation lossless,
        # so that the best epoch is chosen on the crops as they are
        blob, psnr = encode_mosaic(p.crops[rows], quality if split == "train" else None)
        arrays[f"{split}_mosaic"] = np.frombuffer(blob, np.uint8)
        arrays[f"{split}_labels"] = p.labels[rows].astype(np.int16)
        if p.targets is not None:
            arrays[f"{split}_targets"] = p.targets[rows].astype(np.float32)
        counts[split] = int(rows.sum())
        if split == "train":
            train_psnr = psnr
    meta = {"classes": classes, "input": spec.to_dict(), "base": base, "counts": counts,
            "data": data_card(data, {s: sets[s] for s in SPLITS}), "jpeg_quality": quality, "psnr_db": train_psnr,
            "sources": [Path(s).name for s in sources]}
    arrays["meta"] = np.array(json.dumps(meta))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as f:  # JPEG bytes do not compress: a plain .npz
        np.savez(f, **arrays)
        f.seek(0)
        atomic_write_bytes(out, f.read())
    return {**meta, "out": str(out), "bytes": out.stat().st_size}


def load_pack(path) -> tuple[dict, dict[str, TensorSet]]:
    """(meta, {split: TensorSet}) of a pack written by pack()."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no pack here; build it with scripts/gpu_train.py --pack and carry it along")
    with np.load(p, allow_pickle=False) as z:
        need = ["meta", *(f"{s}_{k}" for s in SPLITS for k in ("mosaic", "labels"))]
        missing = [k for k in need if k not in z]
        if missing:
            raise InputError(f"{p}: not a pack of scripts/gpu_train.py (lacks {missing})")
        meta = json.loads(str(z["meta"]))
        spec = InputSpec.from_dict(meta["input"])
        sets = {}
        for s in SPLITS:
            crops = decode_mosaic(z[f"{s}_mosaic"].tobytes(), meta["counts"][s], spec.image_size)
            ts = TensorSet.build(spec, z[f"{s}_labels"].astype(np.int64), crops=crops)
            if f"{s}_targets" in z:
                ts = replace(ts, targets=torch.from_numpy(z[f"{s}_targets"]))
            sets[s] = ts
    return meta, sets


# ----------------------------------------------------------------------------- the GPU run
def _epoch_logger(limit_s: float | None, cancel: threading.Event):
    def log(ev: dict) -> None:
        if ev["event"] == "epoch":
            print(f"epoch {ev['epoch']}: train_loss {ev['train_loss']:.4f} val_loss {ev['val_loss']:.4f} "
                  f"val_acc {ev['val_acc']:.4f} val_recall {ev['val_recall']:.4f} ({ev['elapsed_s']:.1f} s)",
                  flush=True)
        if limit_s is not None and ev["elapsed_s"] > limit_s and not cancel.is_set():
            print(f"time limit {limit_s:.0f} s reached: stopping with the best epoch so far", flush=True)
            cancel.set()
    return log


def write_parts(weights: Path, out: Path) -> list[Path]:
    """Cut a weights file into out/<name>.partN of at most PART_BYTES each."""
    blob = weights.read_bytes()
    parts = []
    for i in range(0, max(len(blob), 1), PART_BYTES):
        part = out / f"{weights.name}.part{i // PART_BYTES}"
        atomic_write_bytes(part, blob[i:i + PART_BYTES])
        parts.append(part)
    return parts


def run(args) -> dict:
    """Train on the pack on args.device and write the card, the weight parts and report.json to args.out."""
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         schedule=args.schedule, weight_decay=args.weight_decay, class_weights=True,
                         class_weight_power=args.class_weight_power, soft_targets=True, augment=True,
                         pose_augment=30.0, tta_flip=True, patience=0, monitor="val_recall", seed=args.seed,
                         device=args.device).resolved()
    meta, sets = load_pack(args.data)
    classes, spec = meta["classes"], InputSpec.from_dict(meta["input"])
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(classes), **json.loads(args.model_kw))
    gpu = torch.cuda.get_device_name() if config.device == "cuda" else "none"
    print(f"torch {torch.__version__}, device {config.device} (GPU: {gpu}); {args.model} "
          f"{count_parameters(model)} parameters; samples { {k: len(v) for k, v in sets.items()} }; "
          f"pack PSNR {meta['psnr_db']:.1f} dB", flush=True)
    if config.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 48x48 batches
    cancel = threading.Event()
    t0 = time.perf_counter()
    result = train(model, sets["train"], sets["val"], config, callback=_epoch_logger(args.time_limit, cancel),
                   cancel=cancel)
    train_s = time.perf_counter() - t0
    training = {"config": config.to_dict(), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "stopped_by_time_limit": bool(result.cancelled), "elapsed_s": train_s, "device": config.device,
                "gpu": gpu, "torch": torch.__version__,
                "command": "python3 scripts/gpu_train.py " + shlex.join(args.argv),
                "data_pack": {k: meta[k] for k in ("base", "sources", "counts", "jpeg_quality", "psnr_db")}}
    card = make_card(model, classes, spec, training=training, data=meta["data"],
                     metrics={"val_at_best_epoch": result.best,
                              "note": "validation: every dataset's val rows (FER+ Valid, CK+ validation subjects, "
                                      "the AffectNet val share), flip TTA"})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights, card_path = save_checkpoint(model, Path(tmp) / "model", card)
        parts = write_parts(weights, out)
        atomic_write_bytes(out / "model.json", card_path.read_bytes())
    report = {"model": args.model, "model_kw": json.loads(args.model_kw), "parameters": count_parameters(model),
              "device": config.device, "gpu": gpu, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
              "stopped_by_time_limit": bool(result.cancelled), "train_s": train_s,
              "s_per_epoch": result.history[-1]["elapsed_s"] / len(result.history) if result.history else None, "best": result.best, "history": result.history,
              "parts": [p.name for p in parts]}
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    best = result.best
    print(f"trained {result.epochs_run} epochs in {train_s:.1f} s ({report['s_per_epoch'] or 0:.2f} s/epoch) on "
          f"{config.device}; best epoch {result.best_epoch}: val mean recall {best.get('val_recall', 0):.4f}, "
          f"accuracy {best.get('val_acc', 0):.4f}; wrote {out}/model.json and {len(parts)} weight parts", flush=True)
    return report


def assemble(folder, out_stem) -> tuple[Path, Path]:
    """Join a GPU run's weight parts into a checkpoint at out_stem (.safetensors + .json), checked against
    the card's sha256, and load it once to prove it reads."""
    from ferlib.inference.checkpoint import read_checkpoint

    folder = Path(folder)
    card_file = folder / "model.json"
    if not card_file.is_file():
        raise InputError(f"{folder}: no model.json (a folder that scripts/gpu_train.py --out wrote)")
    card = json.loads(card_file.read_text())
    parts = sorted(folder.glob(f"{card['weights_file']}.part*"), key=lambda p: int(p.suffix.removeprefix(".part")))
    if not parts:
        raise InputError(f"{folder}: no {card['weights_file']}.partN files")
    blob = b"".join(p.read_bytes() for p in parts)
    if sha256_bytes(blob) != card["weights_sha256"]:
        raise InputError(f"{folder}: the joined parts do not match the card's sha256 (a part is missing or cut)")
    wpath, cpath = checkpoint_paths(Path(out_stem))
    wpath.parent.mkdir(parents=True, exist_ok=True)
    card["weights_file"] = wpath.name
    atomic_write_bytes(wpath, blob)
    atomic_write_bytes(cpath, json.dumps(card, indent=2).encode())
    read_checkpoint(cpath)
    return wpath, cpath


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--pack", action="store_true", help="build the pack (here) instead of training")
    mode.add_argument("--assemble", type=Path, metavar="FOLDER",
                      help="join a GPU run's folder (model.json + parts) into the checkpoint --out")
    ap.add_argument("--source", type=Path, action="append",
                    help="--pack: a dataset (repeat; default: the three the shipped default trains on)")
    ap.add_argument("--base", default=DEFAULT_BASE, help="--pack: the model whose input spec and classes to use")
    ap.add_argument("--quality", type=int, default=95, help="--pack: JPEG quality of the mosaic")
    ap.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the pack (--pack writes it here)")
    ap.add_argument("--out", type=Path, default=None,
                    help="training: the folder for the card and weight parts; --assemble: the checkpoint stem")
    ap.add_argument("--device", default="cuda", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--model", default="resnet18_attention")
    ap.add_argument("--model-kw", default='{"width": 64, "se_reduction": 16, "dropout": 0.3, "eval_blur": 0.45}',
                    help="JSON keyword arguments of create_model")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop after this many seconds of training, keeping the best epoch so far")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw", "adam"))
    ap.add_argument("--schedule", default="onecycle", choices=("onecycle", "cosine", "linear", "constant"))
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--class-weight-power", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.pack:
            info = pack(args.source or DEFAULT_SOURCES, args.data, base=args.base, quality=args.quality)
            print(f"wrote {info['out']}: {info['bytes'] / 1e6:.1f} MB, {info['counts']} crops, "
                  f"JPEG quality {info['jpeg_quality']} (PSNR {info['psnr_db']:.1f} dB)")
            return 0
        if args.out is None:
            raise InputError("--out is needed: the folder to write the card and weights to (on a device: $OUT)"
                             if not args.assemble else "--out is needed: the checkpoint stem to write")
        if args.assemble:
            wpath, cpath = assemble(args.assemble, args.out)
            print(f"wrote {wpath} and {cpath}")
            return 0
        run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
