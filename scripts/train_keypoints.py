"""Train the keypoint regressor on low-resolution FER2013 crops against face mesh's own points.

    nice -n 10 .venv/bin/python scripts/train_keypoints.py --size 24 --epochs 8 > runs/keypoints.log 2>&1

Targets are the eye centres and lip corners that face mesh found on the 48x48 images (landmark
cache of scripts/extract_fer2013.py; images without a face are left out). The model sees the
crop downscaled to --size. Prints and stores the normalised mean error (inter-ocular) on
PrivateTest, next to the error of always predicting the mean training points.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferlib.checkpoint import make_card, save_checkpoint  # noqa: E402
from ferlib.data import extract_landmarks, import_fer2013  # noqa: E402
from ferlib.data.importers import read_image  # noqa: E402
from ferlib.evaluate import keypoint_nme, predict_outputs  # noqa: E402
from ferlib.inputs import InputSpec, TensorSet, keypoint_targets  # noqa: E402
from ferlib.models import create_model  # noqa: E402
from ferlib.train import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013.zip")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="use at most this many training images")
    ap.add_argument("--name", default="keypoint_regressor_fer2013")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df = import_fer2013(args.data)
    ext = extract_landmarks(df, progress=False)
    spec = InputSpec(kind="image", image_size=args.size)
    sets = {}
    for split in ("train", "val", "test"):
        idx = np.flatnonzero((df["split"] == split).to_numpy() & ext.detected)
        if args.limit and split == "train":
            idx = idx[:args.limit]
        crops = np.stack([cv2.cvtColor(read_image(p, 48), cv2.COLOR_BGR2GRAY) for p in df["path"].iloc[idx]])
        sets[split] = TensorSet.build(spec, keypoint_targets(ext.landmarks[idx], 48), crops=crops)
        print(f"{split}: {len(idx)} images with a face", flush=True)
    torch.manual_seed(0)
    model = create_model("keypoint_regressor")
    config = TrainConfig(epochs=args.epochs, batch_size=64, patience=3, num_threads=args.threads, lr=2e-3)
    result = train(model, sets["train"], sets["val"], config,
                   callback=lambda e: e["event"] != "step" and print(e, flush=True))
    test = sets["test"]
    nme = keypoint_nme(predict_outputs(model, test), test.labels)
    mean_nme = keypoint_nme(sets["train"].labels.mean(0).expand_as(test.labels), test.labels)
    print(f"PrivateTest NME {nme:.4f} at {args.size}x{args.size} (predicting the mean points: {mean_nme:.4f})",
          flush=True)
    card = make_card(model, [], spec, training={"config": config.to_dict(), "best_epoch": result.best_epoch},
                     data={"names": ["fer2013"], "targets": "face mesh points of the 48x48 images",
                           "n": {k: len(v) for k, v in sets.items()}},
                     metrics={"test_nme": nme, "test_nme_mean_baseline": mean_nme, "val": result.best})
    print("saved", save_checkpoint(model, ROOT / "models" / args.name, card), flush=True)


if __name__ == "__main__":
    main()
