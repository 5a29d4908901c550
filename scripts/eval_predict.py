"""Accuracy and detection rate through the command users run: `python -m ferlib predict`.

    .venv/bin/python scripts/eval_predict.py SET_FOLDER --model NAME_OR_PATH [--out results.json]

SET_FOLDER holds `<class>/<image>` (scripts/make_eval_sets.py builds them). Runs
`python -m ferlib predict SET_FOLDER --model ... --out CSV` in a subprocess, then scores the CSV:
faces found, accuracy with a missed face counted as wrong, accuracy on found faces, macro F1 (misses
wrong), per-class recall, on a class-balanced version of the set how often each class is predicted
against its true share (1/K), the `path`
counts (mesh | box), and for the synthetic turns (file names `y<yaw>_...`) all of that per yaw.
Only images whose class the model has are scored (the others are counted as excluded), unless
`--keep-other-classes`: then they count as wrong (FER+ Test's contempt faces for a seven-class model).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.classes import canonical  # noqa: E402
from ferlib.fsutil import emit_report  # noqa: E402
from ferlib.training.evaluate import macro_f1  # noqa: E402 (one definition: ferlib evaluate's)

ROOT = Path(__file__).resolve().parents[1]


def score(df: pd.DataFrame, classes: list[str]) -> dict:
    """Metrics of predict's rows (largest face per image) against the `true` column; `classes` are the
    model's, plus any true class it lacks (recall 0)."""
    classes = list(classes) + sorted(set(df["true"]) - set(classes))
    n = len(df)
    found = df["detected"] == 1
    right = found & (df["label"] == df["true"])
    recall = {c: float(right[df["true"] == c].mean()) for c in classes if (df["true"] == c).any()}
    index = {c: i for i, c in enumerate(classes)}
    y = df["true"].map(index).to_numpy(int)
    pred = np.where(found, df["label"].map(lambda c: index.get(c, -1)), -1).astype(int)
    # a class-balanced test built from the set: each true class weighs the same, so a class's
    # predicted share is the mean over true classes of how often it is predicted (K x that = ratio)
    balanced = {c: round(float(len(recall) * np.mean([(found & (df["label"] == c))[df["true"] == k].mean()
                                                       for k in recall])), 3) for c in recall}
    return {"images": n, "found": float(found.mean()), "accuracy_all": float(right.mean()),
            "accuracy_found": float(right[found].mean()) if found.any() else float("nan"),
            "macro_f1_all": macro_f1(y, pred, len(classes)) if n else float("nan"), "recall": recall,
            "balanced_predicted_over_true_share": balanced,
            "path": df.loc[found, "path"].value_counts().to_dict()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", required=True)
    ap.add_argument("--csv", default=None, help="predict's CSV (default: a file beside --out or in /tmp)")
    ap.add_argument("--out", default=None, help="JSON to write")
    ap.add_argument("--keep-other-classes", action="store_true",
                    help="score images of classes the model lacks as wrong (default: leave them out)")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    csv = Path(args.csv or f"/tmp/eval-{folder.name}-{Path(args.model).stem}.csv")
    cmd = [sys.executable, "-m", "ferlib", "predict", str(folder), "--model", args.model, "--out", str(csv)]
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=False)
    seconds = time.monotonic() - t0
    df = pd.read_csv(csv, keep_default_na=False)
    classes = [c[2:] for c in df.columns if c.startswith("p_")]
    df["true"] = [canonical(Path(s).parent.name) for s in df["source"]]
    df = df.drop_duplicates("source", keep="first")  # one face per image is scored: its first row
    other = ~df["true"].isin(classes)
    excluded = 0 if args.keep_other_classes else int(other.sum())
    if not args.keep_other_classes:
        df = df[~other]
    out = {"command": " ".join(["python", "-m", "ferlib"] + cmd[3:]), "seconds": round(seconds, 1),
           "excluded_other_classes": excluded, "scored_wrong_other_classes": int(other.sum()) - excluded,
           "all": score(df, classes)}
    yaw = df["source"].map(lambda s: re.match(r"y(\d+)_", Path(s).name))
    if yaw.notna().all() and len(df):
        df["yaw"] = [int(m.group(1)) for m in yaw]
        out["by_yaw"] = {int(y): score(g, classes) for y, g in df.groupby("yaw")}
    text = json.dumps(out, indent=1)
    emit_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
