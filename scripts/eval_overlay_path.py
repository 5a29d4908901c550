"""Does Live's face-mesh overlay change what the default reads? One video through the Pipeline twice, in
video mode as Live runs it, without and with the overlay; prints how often the label differs, the median
L1 change of the probabilities and the ratio of the faces' box widths:

    .venv/bin/python scripts/eval_overlay_path.py tests/fixtures/WolfgangLanger_Pexels.mp4 [--frames 300]
        [--model NAME] [--tracking]

--tracking turns the overlay on as ferlib 0.8.0 did (the extractor's tracking mesh, whose boxes are the
landmarks'), to measure the old disagreement; without it, as Live does now (`Pipeline.set_overlay_mesh`).
"""
from __future__ import annotations

import argparse

import numpy as np

from ferlib.inference.pipeline import Pipeline
from ferlib.io import iter_video


def run(frames, model, overlay: bool, tracking: bool) -> list:
    out = []
    with Pipeline(model, mode="video") as pipe:
        if overlay and tracking:
            pipe.extractor.mesh = True
        else:
            pipe.set_overlay_mesh(overlay)
        for i, ts, bgr in frames:
            preds = pipe.process(bgr, ts, i).predictions
            out.append(preds[0] if preds else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--model", default=None, help="default: the default model")
    ap.add_argument("--tracking", action="store_true", help="the overlay as ferlib 0.8.0 ran it")
    args = ap.parse_args()
    frames = list(iter_video(args.video, max_frames=args.frames))
    plain = run(frames, args.model, False, args.tracking)
    drawn = run(frames, args.model, True, args.tracking)
    both = [(a, b) for a, b in zip(plain, drawn) if a is not None and b is not None]
    if not both:
        raise SystemExit("no frame with a face in both runs")
    differ = np.mean([a.label != b.label for a, b in both])
    l1 = np.median([np.abs(a.probs - b.probs).sum() for a, b in both])
    width = np.median([(b.face.box[2] - b.face.box[0]) / (a.face.box[2] - a.face.box[0]) for a, b in both])
    print(f"frames {len(frames)}, with a face in both runs {len(both)}: label differs on {differ:.1%}, "
          f"median L1 change {l1:.4f}, box width with / without the overlay {width:.3f}")


if __name__ == "__main__":
    main()
