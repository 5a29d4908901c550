"""Choose and check the default temporal smoothing on the committed Pexels clip, through `ferlib predict`.

    .venv/bin/python scripts/eval_smoothing.py [--model NAME_OR_PATH] [--out results.json]

1. `python -m ferlib predict CLIP --smoothing none` gives each frame's raw probabilities.
2. Every candidate (EMA with several alphas, the window vote with several windows) is replayed on
   those probabilities with ferlib's own Smoother (what predict would give with it).
3. `python -m ferlib predict CLIP` with the defaults confirms the chosen one end to end.
Reported per setting: "sad" share of labelled frames in 0-9 s (the crying part), "happy" share
after 11 s (laughing), label flips per second, and the lag: seconds from the raw labels' change to
happy (the first frame after 9 s from which the raw majority over the next 0.5 s is happy) to the
smoothed label's first happy frame after 9 s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.fsutil import emit_report  # noqa: E402
from ferlib.inference.pipeline import Smoother  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"
FPS = 23.976
CANDIDATES = [("none", {})] + [("ema", {"alpha": a}) for a in (0.5, 0.4, 0.3, 0.2, 0.15, 0.1)] + \
             [("vote", {"window": w}) for w in (4, 8, 12, 16)]


def run_predict(model: str | None, out: Path, *extra: str) -> pd.DataFrame:
    cmd = [sys.executable, "-m", "ferlib", "predict", str(CLIP), "--out", str(out), *extra]
    if model:
        cmd += ["--model", model]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return pd.read_csv(out, keep_default_na=False)


def main_face(df: pd.DataFrame) -> pd.DataFrame:
    """One row per frame: the face with the lowest id (the clip has one person)."""
    return df.sort_values(["frame", "face"]).drop_duplicates("frame").reset_index(drop=True)


def measures(frames: np.ndarray, labels: list[str], raw: list[str]) -> dict:
    t = frames / FPS
    lab = np.array(labels)
    has = lab != ""
    sad = has & (t < 9)
    happy = has & (t >= 11)
    flips = int(sum(a != b for a, b in zip(lab[has][1:], lab[has][:-1])))
    rawa = np.array(raw)
    win = int(round(0.5 * FPS))
    t_raw = next((t[i] for i in range(len(t)) if t[i] >= 9 and (rawa[i:i + win] == "happy").mean() > 0.5), None)
    t_smooth = next((t[i] for i in range(len(t)) if t[i] >= 9 and lab[i] == "happy"), None)
    return {"sad_share_0_9s": round(float((lab[sad] == "sad").mean()), 3),
            "happy_share_after_11s": round(float((lab[happy] == "happy").mean()), 3),
            "flips_per_s": round(flips / (t[-1] - t[0]), 3),
            "lag_s": None if t_raw is None or t_smooth is None else round(float(t_smooth - t_raw), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the shipped default")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    raw_df = main_face(run_predict(args.model, Path("/tmp/smoothing-none.csv"), "--smoothing", "none"))
    pcols = [c for c in raw_df.columns if c.startswith("p_")]
    classes = [c[2:] for c in pcols]
    det = raw_df["detected"].to_numpy() == 1
    probs = raw_df[pcols].replace("", np.nan).to_numpy(float)
    raw = [classes[int(np.argmax(p))] if d else "" for p, d in zip(probs, det)]
    frames = raw_df["frame"].to_numpy()
    out = {"model": args.model or "default", "frames": len(raw_df), "faces_found": round(float(det.mean()), 3),
           "replayed": {}}
    for kind, kw in CANDIDATES:
        sm = Smoother(kind, **kw)
        labels = [classes[int(np.argmax(sm(0, p)))] if d else "" for p, d in zip(probs, det)]
        out["replayed"][f"{kind} {kw}" if kw else kind] = measures(frames, labels, raw)
    default_df = main_face(run_predict(args.model, Path("/tmp/smoothing-default.csv")))
    out["predict_default"] = measures(default_df["frame"].to_numpy(), list(default_df["label"]), raw)
    text = json.dumps(out, indent=1)
    emit_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
