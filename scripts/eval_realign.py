"""Does the keypoint regressor help the landmark path? Measured on the FER2013 faces face mesh misses.

    nice -n 10 .venv/bin/python scripts/eval_realign.py > runs/eval_realign.log 2>&1

For every PublicTest and PrivateTest image the extractor misses (landmark cache), retries the
small-image path on the image re-framed so that the regressor's key points fall on
ferlib.faces.realign.TEMPLATE (at several template scales), upright, then turned by -10 and +10 degrees.
The control does the same retries with the image's own framing instead of the key points (no
regressor). Each variant reports the faces recovered and how many of them the landmark model then
classifies correctly; the setting is chosen on PublicTest and reported on PrivateTest with the
split's accuracy, misses counted as wrong, before and after. Writes runs/eval_realign.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from ferlib.classes import canonical  # noqa: E402
from ferlib.data import extract_landmarks, import_fer2013  # noqa: E402
from ferlib.data.importers import read_image  # noqa: E402
from ferlib.faces.landmarks import LandmarkExtractor  # noqa: E402
from ferlib.inference.checkpoint import card_spec, load_checkpoint  # noqa: E402
from ferlib.inference.keypoints import load_realigner  # noqa: E402
from ferlib.inputs import build_batch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013.zip")
    ap.add_argument("--keypoints", default=str(ROOT / "models" / "keypoint_regressor_fer2013"))
    ap.add_argument("--model", default=str(ROOT / "models" / "landmark_cnn1d_fer2013"))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "eval_realign.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    df = import_fer2013(args.data).table
    ext = extract_landmarks(df, progress=False)
    model, card = load_checkpoint(args.model)
    spec, classes = card_spec(card), [canonical(c) for c in card["classes"]]
    labels = np.array([classes.index(canonical(c)) if canonical(c) in classes else -1 for c in df["label"]])
    realigner = load_realigner(args.keypoints)
    variants = {}
    for use_kp in (False, True):
        for scale in ((0.9, 1.0, 1.1) if use_kp else (1.0,)):
            for angles in ((0.0,), (0.0, -10.0, 10.0)):
                name = f"{'keypoints' if use_kp else 'control'} scale {scale} angles {'/'.join(f'{a:g}' for a in angles)}"
                variants[name] = dict(use_keypoints=use_kp, scale=scale, angles=angles)

    @torch.no_grad()
    def predict(lms: list[np.ndarray]) -> np.ndarray:
        if not lms:
            return np.zeros(0, int)
        return model(build_batch(spec, landmarks_px=np.stack(lms))).argmax(1).numpy()

    report: dict = {"keypoint_model": args.keypoints, "landmark_model": args.model, "splits": {}}
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for split in ("val", "test"):
            rows = np.flatnonzero((df["split"] == split).to_numpy())
            det = rows[ext.detected[rows]]
            base_correct = int((predict(list(ext.landmarks[det])) == labels[det]).sum())
            misses = rows[~ext.detected[rows]]
            images = []
            for i in misses:
                img = read_image(df["path"].iloc[i], 48)
                images.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img)
            out = {"images": len(rows), "detected": len(det), "missed": len(misses), "correct": base_correct,
                   "accuracy_all": base_correct / len(rows), "variants": {}}
            for name, kw in variants.items():
                found, lms = [], []
                for i, img in zip(misses, images):
                    pts = realigner.retry(img, ex._find_small, **kw)
                    if pts is not None:
                        found.append(i)
                        lms.append(pts.astype(np.float32))
                right = int((predict(lms) == labels[np.array(found, int)]).sum()) if found else 0
                out["variants"][name] = {"recovered": len(found), "correct": right,
                                         "detection_rate": (len(det) + len(found)) / len(rows),
                                         "accuracy_all": (base_correct + right) / len(rows)}
                print(f"{split:5s} {name:42s} recovered {len(found):4d}/{len(misses)}, correct {right:4d}, "
                      f"accuracy (misses wrong) {out['accuracy_all']:.4f} -> "
                      f"{out['variants'][name]['accuracy_all']:.4f}", flush=True)
            report["splits"][split] = out
    val = report["splits"]["val"]["variants"]
    best_kp = max((n for n in val if n.startswith("keypoints")), key=lambda n: (val[n]["correct"], -len(n)))
    best_ctl = max((n for n in val if n.startswith("control")), key=lambda n: (val[n]["correct"], -len(n)))
    report["chosen_on_val"] = {"keypoints": best_kp, "control": best_ctl}
    test = report["splits"]["test"]
    print(f"\nchosen on PublicTest: {best_kp!r}; control {best_ctl!r}")
    print(f"PrivateTest: base accuracy {test['accuracy_all']:.4f} (detection {test['detected'] / test['images']:.4f}); "
          f"keypoint retry {test['variants'][best_kp]['accuracy_all']:.4f} "
          f"(detection {test['variants'][best_kp]['detection_rate']:.4f}); control {test['variants'][best_ctl]['accuracy_all']:.4f} "
          f"(detection {test['variants'][best_ctl]['detection_rate']:.4f})")
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
