"""Build the cross-session personal-model protocol's image folders from CK+ (outside the repo: dataset
images with a research-only licence must never be committed).

    .venv/bin/python scripts/make_personal_sets.py --out /tmp/ferlib-personal [--shared ../shared]

For every CK+ subject with at least --min-emotions labelled emotions other than contempt (no shipped
model has contempt), two "sessions" of the same person, `<subject>/A/<class>/*.png` and
`<subject>/B/<class>/*.png`, 350x350 tight face crops (the 48 px CK+ crops upscaled, as in
scripts/make_eval_sets.py):

- A, the recording a user makes in the Studio: the FIRST of the sequence's three apex frames, seen
  frontally and turned 30 degrees left and right (3 views per emotion, like a Studio session with
  head poses; 12-18 samples per person).
- B, "another day": the LAST apex frame, seen at yaw 0, +20 and -40 degrees, each under another
  light and framing (darker: gamma 1.6; brighter with a blur: gamma 0.6, Gaussian sigma 1.5; the
  face smaller in the frame: 80 %, grey border).

Turns are synthetic: face mesh points rotated in 3D and the face re-drawn (scripts/make_eval_sets.py
turn_face). What this measures, and what it cannot: B differs from A in frame, head pose, light and
framing, as a second day does; but CK+ has one sequence per person and emotion, so B shows the same
expression episode as A (a little later in it). It is therefore an upper bound for a real second
day, where the person also poses each emotion anew; docs/results.md "Personal models" says so beside the figures.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_eval_sets import SIDE, turn_face  # noqa: E402

from ferlib.classes import FER7, canonical  # noqa: E402
from ferlib.faces.landmarks import LandmarkExtractor  # noqa: E402
from ferlib.io import load_image  # noqa: E402

VIEWS_A = (0, 30, -30)
VIEWS_B = ((0, "dark"), (20, "bright_blur"), (-40, "small"))


def condition(bgr: np.ndarray, kind: str) -> np.ndarray:
    """Another day's light and framing (module docstring)."""
    if kind == "dark":
        return (255 * (bgr / 255.0) ** 1.6).astype(np.uint8)
    if kind == "bright_blur":
        return cv2.GaussianBlur((255 * (bgr / 255.0) ** 0.6).astype(np.uint8), (0, 0), 1.5)
    if kind == "small":
        side = int(SIDE * 0.8)
        out = np.full_like(bgr, 128)
        o = (SIDE - side) // 2
        out[o:o + side, o:o + side] = cv2.resize(bgr, (side, side), interpolation=cv2.INTER_AREA)
        return out
    raise ValueError(kind)


def sequences(shared: Path) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """subject -> class -> [(frame name in the zip)] sorted, for classes among FER7."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    with zipfile.ZipFile(shared / "data" / "ckplus48.zip") as z:
        for n in sorted(z.namelist()):
            parts = n.split("/")
            if len(parts) != 3 or not parts[2].endswith(".png"):
                continue
            cls = canonical(parts[1])
            if cls not in FER7:
                continue
            subject = parts[2].split("_")[0]
            out[subject][cls].append(n)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/ferlib-personal")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--min-emotions", type=int, default=4)
    args = ap.parse_args(argv)
    out, shared = Path(args.out), Path(args.shared)
    subjects = {s: c for s, c in sequences(shared).items() if len(c) >= args.min_emotions}
    skipped = 0
    with zipfile.ZipFile(shared / "data" / "ckplus48.zip") as z, LandmarkExtractor(mode="static", max_faces=1) as ex:
        for subject, by_class in sorted(subjects.items()):
            for cls, frames in by_class.items():
                for session, name, views in (("A", frames[0], [(y, None) for y in VIEWS_A]), ("B", frames[-1], VIEWS_B)):
                    bgr = cv2.resize(load_image(z.read(name)), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
                    faces = ex.process(bgr)
                    if not faces or faces[0].landmarks is None:
                        skipped += 1
                        continue
                    pts = faces[0].landmarks.astype(np.float64)
                    for yaw, kind in views:
                        img = bgr if yaw == 0 else turn_face(bgr, pts, yaw)
                        img = img if kind is None else condition(img, kind)
                        p = out / subject / session / cls / f"{Path(name).stem}_y{yaw:+03d}{'_' + kind if kind else ''}.png"
                        p.parent.mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(p), img)
    print(f"{len(subjects)} people with >= {args.min_emotions} emotions; {skipped} frames without a face mesh skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
