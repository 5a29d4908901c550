"""Train any registered emotion model on FER2013 (+ optionally the AffectNet subset) and test it on
the official PrivateTest split, misses counted as wrong.

    nice -n 10 .venv/bin/python scripts/train_fer2013.py --model landmark_cnn1d --method proposed \
        --name landmark_cnn1d_fer2013 > runs/landmark_cnn1d_fer2013.log 2>&1

Splits: FER2013 Training (train), PublicTest (validation, early stopping), PrivateTest (test, as it
is). Landmark-based models only see faces that MediaPipe found (cached by ferlib.data.cache); on the
test split an image without a detected face counts as a wrong prediction in `accuracy_all`, the
headline figure, and the detection rate is reported beside it. `--add-affectnet` adds the AffectNet
subset (every image resized to 48x48 first, so resolution cannot leak the class) to the training set
only. Writes models/<name>.{safetensors,json} (unless --no-save) and runs/<name>/.
"""
from __future__ import annotations

import argparse
import hashlib
import json
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
from ferlib.data import extract_landmarks, import_affectnet, import_fer2013  # noqa: E402
from ferlib.data.importers import read_image  # noqa: E402
from ferlib.evaluate import evaluate, save_metrics  # noqa: E402
from ferlib.inputs import TensorSet, spec_for_model  # noqa: E402
from ferlib.models import count_parameters, create_model  # noqa: E402
from ferlib.normalize import head_pose  # noqa: E402
from ferlib.train import TrainConfig, train  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(df, spec, need_crops: bool):
    """Labels, landmarks (NaN where missed), detected mask and grey 48x48 crops of a DataFrame."""
    labels = np.array([index_of(c, FER7) for c in df["label"]], dtype=np.int64)
    lm = extract_landmarks(df, progress=False) if spec.needs_landmarks else None
    crops = (np.stack([cv2.cvtColor(read_image(p, 48), cv2.COLOR_BGR2GRAY) for p in df["path"]])
             if need_crops else None)
    det = lm.detected if lm is not None else np.ones(len(df), bool)
    return labels, (lm.landmarks if lm is not None else None), det, crops


def tensor_set(spec, labels, lm, det, crops) -> TensorSet:
    return TensorSet.build(spec, labels[det], landmarks_px=None if lm is None else lm[det],
                           crops=None if crops is None else crops[det])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-kw", default="{}", help="JSON kwargs for create_model")
    ap.add_argument("--method", default="proposed", choices=("proposed", "minmax", "similarity"))
    ap.add_argument("--subset", default=None, help="landmark subset (default: the model's)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--schedule", default="linear")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--weighted-sampler", action="store_true")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--tta", action="store_true", help="test-time flip averaging")
    ap.add_argument("--add-affectnet", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true", help="only report (for comparison runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(FER7), **json.loads(args.model_kw))
    overrides = {"method": args.method}
    if args.subset:
        overrides["subset"] = args.subset
    spec = spec_for_model(model, **overrides)
    need_crops = spec.needs_crops

    fer_zip = SHARED / "fer2013.zip"
    df = import_fer2013(fer_zip)
    parts = {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    loaded = {s: load(d, spec, need_crops) for s, d in parts.items()}
    data_info = {"names": ["fer2013"], "files": {"fer2013.zip": sha256(fer_zip)},
                 "splits": {"train": "FER2013 Training", "val": "FER2013 PublicTest", "test": "FER2013 PrivateTest"},
                 "detection_rate": {s: float(v[2].mean()) for s, v in loaded.items()}}
    train_set = tensor_set(spec, *loaded["train"])
    if args.add_affectnet:
        aff_zip = SHARED / "affectnet_subset.zip"
        adf = import_affectnet(aff_zip, resize_to=48)
        aff = load(adf, spec, need_crops)
        aff_set = tensor_set(spec, *aff)
        train_set = TensorSet({k: torch.cat([train_set.tensors[k], aff_set.tensors[k]]) for k in train_set.tensors},
                              torch.cat([train_set.labels, aff_set.labels]), spec)
        data_info["names"].append("affectnet_subset (train only, resized to 48x48)")
        data_info["files"]["affectnet_subset.zip"] = sha256(aff_zip)
        data_info["detection_rate"]["affectnet"] = float(aff[2].mean())
    val_set = tensor_set(spec, *loaded["val"])
    y_test, lm_test, det_test, crops_test = loaded["test"]
    test_set = tensor_set(spec, *loaded["test"])
    data_info["n"] = {"train": len(train_set), "val": len(val_set), "test": int(len(y_test)),
                      "test_detected": int(det_test.sum())}
    print(f"{args.name}: data ready in {time.perf_counter() - t0:.0f} s: {data_info['n']}, "
          f"detection {data_info['detection_rate']}", flush=True)

    config = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, schedule=args.schedule, weight_decay=args.weight_decay,
                         label_smoothing=args.label_smoothing, weighted_sampler=args.weighted_sampler,
                         augment=not args.no_augment, tta_flip=args.tta, seed=args.seed, num_threads=args.threads)
    print(f"{args.model} {args.model_kw}: {count_parameters(model)} params; spec {spec.to_dict()}; {config}", flush=True)

    def log(ev: dict) -> None:
        if ev["event"] != "step":
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items()), flush=True)

    run_dir = ROOT / "runs" / args.name
    result = train(model, train_set, val_set, config, callback=log, run_dir=run_dir)
    poses = np.full((len(y_test), 3), np.nan)
    if lm_test is not None:
        poses[det_test] = np.asarray([head_pose(p) for p in lm_test[det_test]])
    metrics = evaluate(model, labels=y_test, data=test_set, classes=FER7, detected_mask=det_test,
                       poses=poses if lm_test is not None else None, tta_flip=args.tta)
    save_metrics(metrics, run_dir / "test_metrics.json")
    print(f"RESULT {args.name}: PrivateTest accuracy_all {metrics['accuracy_all']:.4f} (misses wrong), "
          f"accuracy on detected {metrics['accuracy']:.4f}, detection {metrics['detection_rate']:.4f}, "
          f"macro F1 all {metrics['macro_f1_all']:.4f}; best epoch {result.best_epoch}, "
          f"val acc {result.best.get('val_acc', float('nan')):.4f}, {result.elapsed_s:.0f} s", flush=True)
    if args.no_save:
        return
    card = make_card(model, FER7, spec,
                     training={"config": config.to_dict(), "epochs_run": result.epochs_run,
                               "best_epoch": result.best_epoch, "elapsed_s": result.elapsed_s,
                               "command": " ".join(["python", "scripts/train_fer2013.py", *sys.argv[1:]])},
                     data=data_info,
                     metrics={"val": result.best,
                              "test": {k: metrics[k] for k in ("accuracy_all", "accuracy", "detection_rate",
                                                               "macro_f1_all", "macro_f1", "per_class", "confusion",
                                                               "n", "n_detected")},
                              "test_note": "official FER2013 PrivateTest as it is (duplicates and near-blank "
                                           "images kept); accuracy_all counts faces MediaPipe missed as wrong"})
    paths = save_checkpoint(model, ROOT / "models" / args.name, card)
    print(f"saved {paths[0]} and {paths[1]}", flush=True)


if __name__ == "__main__":
    main()
