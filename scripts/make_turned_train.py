"""Turned-head training crops: training faces turned in 3-D, then frontalised as `ferlib predict` and Live
frontalise them, written as class folders for `ferlib finetune --extra-train` (outside the repo: they
are made from dataset images with research-only licences and must never be committed).

    .venv/bin/python scripts/make_turned_train.py --out /tmp/ferlib-turned [--shared ../shared]
    .venv/bin/python scripts/make_turned_train.py --split val --ferplus 1500 --out /tmp/ferlib-turned-val

Only the TRAIN rows of each dataset, split exactly as `ferlib finetune --data` splits them
(`ferlib.data.import_dataset`, seed 0): the CK+ train subjects, the AffectNet subset without its
held-out crops (cache/affectnet_subset_train.zip, scripts/make_affectnet_train_zip.py) less its
validation share, and `--ferplus` FER+ Train images with a majority label. Each image is resized to
350 px like the held-out sets (scripts/make_eval_sets.py), face-meshed, and when the face is frontal
(|yaw| < 10 degrees) turned once by a yaw drawn from +-[--min-yaw, --max-yaw]
(`ferlib.faces.frontalize.turn_face`, the same warp as the synthetic test turns), meshed again and
cut with `ferlib.faces.crops.frontal_crop`: a 48 px grey crop under the image's label. The test turns are made from
other images (CK+ test subjects, AffectNet held-out crops); they share this warp, so figures on them
flatter real turned heads (docs/results.md says so beside them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import read_image
from ferlib.data.tensors import import_dataset
from ferlib.faces.crops import frontal_crop
from ferlib.faces.frontalize import turn_face
from ferlib.faces.landmarks import LandmarkExtractor

SIDE = 350


def rows(shared: Path, ferplus: int, seed: int, split: str = "train") -> list[tuple[str, str]]:
    """(path, label) of the rows of one split (train or val) to turn."""
    out: list[tuple[str, str]] = []
    for path, take in ((shared / "data" / "ckplus48.zip", None), (Path("cache/affectnet_subset_train.zip"), None),
                       (shared / "data" / "ferplus.zip", ferplus)):
        if not path.exists():
            sys.exit(f"no {path} (the AffectNet train zip: scripts/make_affectnet_train_zip.py)")
        df = import_dataset(path).table
        df = df[(df["split"] == split) & df["label"].notna()]
        if take is not None:
            df = df.sample(n=min(take, len(df)), random_state=seed)
        out += list(zip(df["path"], df["label"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--ferplus", type=int, default=4000, help="FER+ images of the split to draw (majority labels)")
    ap.add_argument("--split", default="train", choices=("train", "val"),
                    help="val: the validation rows (CK+ validation subjects, AffectNet's validation share, FER+ "
                         "Valid) turned the same way, to choose a turned-face expert on (never trained on)")
    ap.add_argument("--min-yaw", type=float, default=15.0)
    ap.add_argument("--max-yaw", type=float, default=50.0)
    ap.add_argument("--shard", default="0/1", help="K/N: this process takes every N-th row from the K-th")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    k, n = (int(v) for v in args.shard.split("/"))
    todo = rows(Path(args.shared), args.ferplus, args.seed, args.split)[k::n]
    rng = np.random.default_rng(args.seed + k)
    out = Path(args.out)
    made = skipped = 0
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for i, (path, label) in enumerate(todo):
            name = out / label / f"{k}_{i:06d}.png"
            if name.exists():
                made += 1
                continue
            img = cv2.resize(read_image(path), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
            faces = ex.process(img)
            if not faces or faces[0].landmarks is None or faces[0].pose is None or abs(faces[0].pose[0]) >= 10:
                skipped += 1
                continue
            yaw = float(rng.uniform(args.min_yaw, args.max_yaw)) * rng.choice((-1, 1))
            turned = turn_face(img, faces[0].landmarks.astype(np.float64), yaw)
            again = ex.process(turned)
            if not again or again[0].landmarks is None:
                skipped += 1
                continue
            crop = frontal_crop(turned, again[0].landmarks, 48, pose=again[0].pose)
            name.parent.mkdir(parents=True, exist_ok=True)
            tmp = name.with_suffix(".tmp.png")
            cv2.imwrite(str(tmp), crop)
            tmp.replace(name)
            made += 1
            if i % 500 == 0:
                print(f"{i}/{len(todo)}: {made} made, {skipped} skipped", flush=True)
    print(f"shard {args.shard}: {made} crops in {out}, {skipped} skipped (not frontal, or no mesh)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
