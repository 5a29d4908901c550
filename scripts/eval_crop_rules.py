"""Accuracy of one image model under three crop rules, by the face's measured yaw, on a folder of class
folders (e.g. the held-out sets of scripts/make_eval_sets.py):

    .venv/bin/python scripts/eval_crop_rules.py /tmp/ferlib-eval/affectnet_tight350 [--model NAME]

Every image is face-meshed once (static mode, one face); the model (with its card's flip averaging, as
`ferlib predict` runs it) then reads the same face cropped three ways:
- box: framed on the detector box, as `ferlib predict` crops a face without landmarks;
- landmarks: framed on the face mesh's bounding box (`face_crop` of a face with landmarks);
- frontal: frontalised and framed on the frontal points (`frontal_crop`).
Faces face mesh cannot read are counted wrong under every rule. This is the measurement behind
FRONTAL_MIN_YAW (ferlib.faces.crops); `ferlib predict` itself uses `model_crop(frontal=True)`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ferlib.faces.crops import face_crop, frontal_crop
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.inference.pipeline import Pipeline
from ferlib.inputs import build_batch
from ferlib.io import load_image

BUCKETS = ((0, 10), (10, 20), (20, 30), (30, 90))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=None, help="default: the shipped default")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    files = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rules = {
        "box": lambda bgr, f, n: face_crop(bgr, replace(f, landmarks=None), n),
        "landmarks": lambda bgr, f, n: face_crop(bgr, f, n),
        "frontal": lambda bgr, f, n: frontal_crop(bgr, f.landmarks, n, pose=f.pose),
        "frontal_box": lambda bgr, f, n: frontal_crop(bgr, f.landmarks, n, pose=f.pose, box=f.box),
    }
    right: dict[str, dict[str, int]] = {r: {} for r in rules}
    count: dict[str, int] = {}
    with LandmarkExtractor(mode="static", max_faces=1) as ex, Pipeline(args.model, extractor=ex) as pipe:
        size = pipe.spec.image_size
        for p in files:
            bgr = load_image(p)
            faces = ex.process(bgr)
            face = faces[0] if faces else None
            if face is None or face.landmarks is None or face.pose is None:
                bucket = "no mesh"
            else:
                yaw = abs(face.pose[0])
                bucket = next(f"{lo}-{hi}" for lo, hi in BUCKETS if yaw < hi or hi == BUCKETS[-1][1])
            for b in (bucket, "all"):
                count[b] = count.get(b, 0) + 1
            for rule, crop in rules.items():
                ok = 0
                if bucket != "no mesh":
                    batch = build_batch(pipe.spec, crops=crop(bgr, face, size)[None])
                    ok = int(pipe.classes[int(np.argmax(pipe.probabilities(batch)[0]))] == p.parent.name)
                for b in (bucket, "all"):
                    right[rule][b] = right[rule].get(b, 0) + ok
    order = ["all"] + [f"{lo}-{hi}" for lo, hi in BUCKETS] + ["no mesh"]
    order = [b for b in order if b in count]
    print(f"{pipe.name} on {args.folder}: accuracy by |yaw| (degrees), faces in brackets")
    print("| rule | " + " | ".join(f"{b} ({count[b]})" for b in order) + " |")
    print("|---|" + "---|" * len(order))
    for rule in rules:
        print(f"| {rule} | " + " | ".join(f"{right[rule].get(b, 0) / count[b]:.3f}" for b in order) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": pipe.name, "folder": args.folder, "faces": count,
                                              "accuracy": {r: {b: right[r].get(b, 0) / count[b] for b in order}
                                                           for r in rules}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
