"""Measure ferlib.faces.crops.BOX_TO_LANDMARKS: how a BlazeFace box maps onto the face mesh's bounding box.

For every face where both the detector box and face mesh exist (the committed Pexels clip, every
10th frame, and the images given), prints the median ratio of the landmark box's longer side to the
detector box's longer side, and the median offset of the landmark box's centre below the detector
box's centre (as a fraction of the landmark box's longer side).

    .venv/bin/python scripts/calibrate_box_crop.py [IMAGES_OR_FOLDERS...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ferlib.faces.crops import box_of  # noqa: E402
from ferlib.faces.detection import FaceDetector  # noqa: E402
from ferlib.faces.mesh import FaceMesher  # noqa: E402
from ferlib.inference.predict import expand_inputs  # noqa: E402
from ferlib.io import iter_video, load_image  # noqa: E402

CLIP = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"


def frames(extra):
    for i, _, bgr in iter_video(CLIP):
        if i % 10 == 0:
            yield bgr
    for p in expand_inputs(extra):
        yield load_image(p)


def main(argv) -> int:
    det, mesher = FaceDetector(), FaceMesher()
    ratio, shift = [], []
    for bgr in frames(argv):
        for d in det.detect(bgr):
            pts = mesher.mesh_box(bgr, d.box)
            if pts is None:
                continue
            lx0, ly0, lx1, ly1 = box_of(pts)
            b = d.box
            lside = max(lx1 - lx0, ly1 - ly0)
            ratio.append(lside / max(b[2] - b[0], b[3] - b[1]))
            shift.append(((ly0 + ly1) / 2 - (b[1] + b[3]) / 2) / lside)
    print(f"{len(ratio)} faces: longer-side ratio median {np.median(ratio):.3f} (p10 {np.percentile(ratio, 10):.3f}, "
          f"p90 {np.percentile(ratio, 90):.3f}); centre shift median {np.median(shift):.3f} "
          f"(p10 {np.percentile(shift, 10):.3f}, p90 {np.percentile(shift, 90):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
