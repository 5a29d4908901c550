"""Build the image folders that `scripts/eval_predict.py` runs `ferlib predict` on (outside the repo:
the images are dataset images with research-only licences and must never be committed).

    .venv/bin/python scripts/make_eval_sets.py --out /tmp/ferlib-eval [--shared ../shared]

Sets (each `<set>/<class>/<file>`):
- fer2013_private: FER2013 PrivateTest as it is (3,589 grey 48 px images, the official test split).
- affectnet_tight350: the AffectNet subset, every class, resized to 350x350 (a tight face crop:
  the face fills the image); `--per-class` images per class (the first by name,
  `ferlib.data.first_per_class`: scripts/make_affectnet_train_zip.py leaves them out of training).
- ckplus_test350: CK+48, the last frame of each sequence of the TEST subjects (`subject_split`, seed 0:
  the subjects `ferlib train --data ckplus48.zip` never trains on), resized to 350x350.
- ferplus_test: FER+ Test (= FER2013 PrivateTest) under its majority labels, eight classes (3,137 of
  3,573 images have one).
- turns: synthetic head turns: frontal faces (ckplus_test350 and affectnet_tight350 images where
  face mesh reads a face with |yaw| < 10 degrees) turned by each of TURNS degrees: the face mesh's
  478 points are rotated in 3D about the face's vertical axis and the face is re-drawn triangle by
  triangle (far triangles first), its old region inpainted first. Hair, ears and neck stay as they
  were, so it is a rough stand-in for a real turn. File names carry the yaw: `y45_<name>`.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import (  # noqa: E402,E501
    first_per_class,
    import_affectnet,
    import_ckplus,
    import_ferplus,
    read_bytes,
    read_image,
    subject_split,
)
from ferlib.data.importers import split_zip_path  # noqa: E402
from ferlib.faces.frontalize import turn_face  # noqa: E402
from ferlib.faces.landmarks import LandmarkExtractor  # noqa: E402
from ferlib.io import load_image  # noqa: E402

TURNS = (0, 15, 30, 45, 60, 75, 90)
SIDE = 350


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def write_enlarged(src: str, dest: Path) -> None:
    """A dataset image enlarged to SIDE x SIDE (INTER_CUBIC), as every 350 px set is made, written to dest."""
    _write(dest, cv2.resize(read_image(src), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC))


def fer_private(shared: Path, out: Path) -> None:
    with zipfile.ZipFile(shared / "data" / "fer2013.zip") as z:
        for n in z.namelist():
            parts = n.split("/")
            if len(parts) == 4 and parts[1] == "PrivateTest" and n.endswith(".jpg"):
                p = out / "fer2013_private" / parts[2] / parts[3]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(z.read(n))


def tight(shared: Path, out: Path, per_class: int) -> None:
    df = import_affectnet(shared / "data" / "affectnet_subset.zip").table
    held = df[first_per_class(df, per_class)]  # the rows make_affectnet_train_zip.py leaves out of training
    for path, c in zip(held["path"], held["label"]):
        write_enlarged(path, out / "affectnet_tight350" / c / (Path(split_zip_path(path)[1]).stem + ".png"))


def ckplus_test(shared: Path, out: Path) -> None:
    """The last frame of each sequence of the CK+ TEST subjects (the subject split of `import_dataset`, seed 0)."""
    df = subject_split(import_ckplus(shared / "data" / "ckplus48.zip").table, seed=0)
    df = df[df["split"] == "test"].sort_values("path")
    last = df.groupby("group").tail(1)  # sorted: the last frame of the sequence
    for path, c in zip(last["path"], last["label"]):
        write_enlarged(path, out / "ckplus_test350" / c / (Path(split_zip_path(path)[1]).stem + ".png"))


def ferplus_test(shared: Path, out: Path) -> None:
    """FER+ Test (= FER2013 PrivateTest) under its majority labels (eight classes; the images without one
    are left out, as the FER+ reference rule says), the 48 px PNGs as they are."""
    df = import_ferplus(shared / "data" / "ferplus.zip").table
    for path, c in zip(df.loc[df["split"] == "test", "path"], df.loc[df["split"] == "test", "label"]):
        p = out / "ferplus_test" / c / Path(split_zip_path(path)[1]).name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(read_bytes(path))


def turns(out: Path, limit: int) -> None:
    by_class: dict[str, list[Path]] = {}
    for p in sorted((out / "ckplus_test350").rglob("*.png")) + sorted((out / "affectnet_tight350").rglob("*.png")):
        by_class.setdefault(p.parent.name, []).append(p)
    # round robin over the classes, so every class is turned
    sources = [p for group in itertools.zip_longest(*by_class.values()) for p in group if p is not None]
    made = 0
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for p in sources:
            if made >= limit:
                break
            bgr = load_image(p)
            faces = ex.process(bgr)
            if not faces or faces[0].landmarks is None or faces[0].pose is None or abs(faces[0].pose[0]) >= 10:
                continue
            pts = faces[0].landmarks.astype(np.float64)
            for yaw in TURNS:
                sign = 1 if made % 2 == 0 else -1  # half turned left, half right
                _write(out / "turns" / p.parent.name / f"y{yaw:02d}_{p.parent.parent.name[:3]}_{p.name}",
                       bgr if yaw == 0 else turn_face(bgr, pts, sign * yaw))
            made += 1
    print(f"turns: {made} frontal faces x {len(TURNS)} yaws")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/ferlib-eval")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--per-class", type=int, default=60, help="AffectNet images per class (tight crops)")
    ap.add_argument("--turns", type=int, default=120, help="frontal faces to turn")
    args = ap.parse_args(argv)
    out, shared = Path(args.out), Path(args.shared)
    fer_private(shared, out)
    tight(shared, out, args.per_class)
    ckplus_test(shared, out)
    ferplus_test(shared, out)
    turns(out, args.turns)
    for d in sorted(out.iterdir()):
        print(f"{d.name}: {sum(1 for _ in d.rglob('*.*'))} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
