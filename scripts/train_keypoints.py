"""Train the keypoint regressor on low-resolution FER2013 crops against face mesh's own points.

    nice -n 10 .venv/bin/python scripts/train_keypoints.py --size 32 --epochs 10 > runs/keypoints.log 2>&1

Targets are the eye centres and lip corners that face mesh found on the 48x48 images (landmark
cache of scripts/extract_fer2013.py; images without a face are left out). The model sees the
crop downscaled to --size. Training adds --augment randomly rotated (+-30 deg), scaled, shifted
and mirrored copies of each image with their points moved alike (the faces face mesh misses are
the tilted, off-centre ones). Prints and stores the normalised mean error (inter-ocular) on
PrivateTest, as it is and under the same random transforms, next to the error of always
predicting the mean training points.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from ferlib.data import extract_landmarks, import_fer2013  # noqa: E402
from ferlib.data.importers import read_image  # noqa: E402
from ferlib.inference.checkpoint import make_card, save_checkpoint  # noqa: E402
from ferlib.inputs import InputSpec, TensorSet, keypoint_targets  # noqa: E402
from ferlib.models import create_model  # noqa: E402
from ferlib.training.evaluate import keypoint_nme, predict_outputs  # noqa: E402
from ferlib.training.train import TrainConfig, train  # noqa: E402


def transform(crops: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random similarity transform (rotation, scale, shift) and mirror of 48x48 crops and their
    crop-relative points; the mirror swaps the subject's left and right points."""
    from ferlib.faces.normalize import KEYPOINT_INDICES
    from ferlib.inputs import _local_mirror

    swap = _local_mirror(KEYPOINT_INDICES.values())  # left <-> right points
    out_c, out_t = np.empty_like(crops), np.empty_like(targets)
    size = crops.shape[1]
    for i, (c, t) in enumerate(zip(crops, targets)):
        m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-30, 30), rng.uniform(0.85, 1.15))
        m[:, 2] += rng.uniform(-0.08, 0.08, 2) * size
        pts = t * size
        if rng.random() < 0.5:
            c = c[:, ::-1]
            pts = np.stack([size - pts[:, 0], pts[:, 1]], 1)[swap]
        out_c[i] = cv2.warpAffine(np.ascontiguousarray(c), m, (size, size), borderMode=cv2.BORDER_REPLICATE)
        out_t[i] = (np.c_[pts, np.ones(len(pts))] @ m.T) / size
    return out_c, out_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013.zip")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--augment", type=int, default=1, help="transformed copies of each training image")
    ap.add_argument("--limit", type=int, default=0, help="use at most this many training images")
    ap.add_argument("--name", default="keypoint_regressor_fer2013")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df = import_fer2013(args.data).table
    ext = extract_landmarks(df, progress=False)
    spec = InputSpec(kind="image", image_size=args.size)
    sets = {}
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        idx = np.flatnonzero((df["split"] == split).to_numpy() & ext.detected)
        if args.limit and split == "train":
            idx = idx[:args.limit]
        crops = np.stack([cv2.cvtColor(read_image(p, 48), cv2.COLOR_BGR2GRAY) for p in df["path"].iloc[idx]])
        targets = keypoint_targets(ext.landmarks[idx], 48)
        if split == "train":
            copies = [transform(crops, targets, rng) for _ in range(args.augment)]
            crops = np.concatenate([crops] + [c for c, _ in copies])
            targets = np.concatenate([targets] + [t for _, t in copies])
        elif split == "test":
            t_crops, t_targets = transform(crops, targets, rng)
            sets["test_transformed"] = TensorSet.build(spec, t_targets, crops=t_crops)
        sets[split] = TensorSet.build(spec, targets, crops=crops)
        print(f"{split}: {len(idx)} images with a face, {len(targets)} samples", flush=True)
    torch.manual_seed(0)
    model = create_model("keypoint_regressor")
    config = TrainConfig(epochs=args.epochs, batch_size=64, patience=3, num_threads=args.threads, lr=2e-3)
    result = train(model, sets["train"], sets["val"], config,
                   callback=lambda e: e["event"] != "step" and print(e, flush=True))
    metrics = {}
    for name in ("test", "test_transformed"):
        test = sets[name]
        metrics[name + "_nme"] = keypoint_nme(predict_outputs(model, test), test.labels)
        metrics[name + "_nme_mean_baseline"] = keypoint_nme(sets["train"].labels.mean(0).expand_as(test.labels),
                                                             test.labels)
        print(f"PrivateTest{' transformed' if 'trans' in name else ''} NME {metrics[name + '_nme']:.4f} at "
              f"{args.size}x{args.size} (predicting the mean points: {metrics[name + '_nme_mean_baseline']:.4f})",
              flush=True)
    card = make_card(model, [], spec, training={"config": config.to_dict(), "best_epoch": result.best_epoch,
                               "command": "python scripts/train_keypoints.py " + " ".join(sys.argv[1:])},
                     data={"names": ["fer2013"], "targets": "face mesh points of the 48x48 images",
                           "n": {k: len(v) for k, v in sets.items()},
                           "augment": f"{args.augment} random rotation/scale/shift/mirror copies per image"},
                     metrics={**metrics, "val": result.best})
    print("saved", save_checkpoint(model, ROOT / "models" / args.name, card), flush=True)


if __name__ == "__main__":
    main()
