"""Personal models, measured through the commands a user runs: `ferlib finetune` then `ferlib predict`.

    .venv/bin/python scripts/make_personal_sets.py --out /tmp/ferlib-personal
    .venv/bin/python scripts/personal_protocol.py --sets /tmp/ferlib-personal \
        --methods head,prototype,full,train --out benchmarks/2026-11-27-personal-protocol

1. Cross-session (scripts/make_personal_sets.py says what A and B are): for every person, `ferlib
   predict B --model BASE` (before), then per method `ferlib finetune BASE --data A --adapt METHOD
   --out M` and `ferlib predict B --model M` (after). A missed face counts as wrong. Both commands run
   in this process through `ferlib.cli.main` (the same code as the console command, without the
   interpreter start-up, which is timed once apart: `--startup`).
2. Within one recording (the first source design's chunked split): a Studio session made from the
   committed Pexels clip exactly as the Studio's recorder stores samples (face mesh, face_crop, pose)
   at --rate-hz, split by the Studio's chunked 70/15/15 rule; `ferlib finetune BASE --data STORE`
   reports the test chunks, `ferlib evaluate BASE --data STORE` gives the before figure.

Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_predict import score  # noqa: E402

from ferlib.classes import canonical  # noqa: E402
from ferlib.cli import main as ferlib_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"


def run(argv: list[str], log) -> None:
    with redirect_stderr(log):
        rc = ferlib_main(argv)
    if rc != 0:
        raise SystemExit(f"ferlib {' '.join(argv)} failed with {rc} (log: {log.name})")


def predict_accuracy(folder: Path, model: str, work: Path, log) -> dict:
    csv = work / f"pred-{abs(hash((str(folder), model)))}.csv"
    run(["predict", str(folder), "--model", model, "--out", str(csv)], log)
    df = pd.read_csv(csv, keep_default_na=False)
    classes = [c[2:] for c in df.columns if c.startswith("p_")]
    df["true"] = [canonical(Path(s).parent.name) for s in df["source"]]
    df = df.drop_duplicates("source", keep="first")
    return score(df[df["true"].isin(classes)], classes)


def adapt(base: str, data: Path, method: str, out: Path, work: Path, log) -> float:
    """Runs finetune; returns the adaptation's own seconds (the card's), data preparation excluded."""
    t0 = time.monotonic()
    run(["finetune", base, "--data", str(data), "--adapt", method, "--out", str(out),
         "--cache-dir", str(work / "cache"), "--run-dir", str(work / "runs" / out.name)], log)
    wall = time.monotonic() - t0
    card = json.loads(out.with_suffix(".json").read_text())
    personal = card["training"].get("personal")
    return {"adapt_s": personal["report"]["seconds"] if personal else card["training"]["elapsed_s"],
            "command_s": round(wall, 2)}


def cross_session(sets: Path, base: str, methods: list[str], work: Path, log, limit: int | None) -> dict:
    people = sorted(p.name for p in sets.iterdir() if (p / "A").is_dir() and (p / "B").is_dir())[:limit]
    rows = []
    for person in people:
        a, b = sets / person / "A", sets / person / "B"
        row = {"person": person, "adapt_samples": sum(1 for _ in a.rglob("*.png")),
               "test_samples": sum(1 for _ in b.rglob("*.png")),
               "before": predict_accuracy(b, base, work, log)["accuracy_all"]}
        for m in methods:
            out = work / "models" / f"{person}-{m}"
            row[f"{m}_time"] = adapt(base, a, m, out, work, log)
            row[m] = predict_accuracy(b, str(out), work, log)["accuracy_all"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"people": len(rows), "before": float(np.mean([r["before"] for r in rows]))}
    for m in methods:
        summary[m] = float(np.mean([r[m] for r in rows]))
        summary[f"{m}_min"] = float(np.min([r[m] for r in rows]))
        summary[f"{m}_adapt_s_max"] = float(np.max([r[f"{m}_time"]["adapt_s"] for r in rows]))
        summary[f"{m}_command_s_max"] = float(np.max([r[f"{m}_time"]["command_s"] for r in rows]))
    return {"rows": rows, "summary": summary}


def clip_session(store_root: Path, rate_hz: float) -> dict:
    """A Studio session from the committed clip, stored as StudioRecorder stores samples."""
    from ferlib.faces.crops import face_crop
    from ferlib.faces.landmarks import LandmarkExtractor
    from ferlib.io import iter_video
    from ferlib.store import Store
    from webapp.video import STUDIO_CROP_SIZE

    store = Store(store_root)
    sid = store.create_session("pexels-clip", "indoor")
    fps, last = 23.98, -1e9
    counts: dict[str, int] = {}
    with LandmarkExtractor(mode="video", max_faces=1, keep_unmeshed=False) as ex:
        for idx, t_ms, bgr in iter_video(CLIP):
            t = idx / fps
            emotion = "sad" if t < 9.0 else "happy" if t >= 11.0 else None
            faces = ex.process(bgr, t_ms)
            if emotion is None or not faces or t - last < 1.0 / rate_hz:
                continue
            face = faces[0]
            store.add_sample(sid, emotion, face.landmarks, crop=face_crop(bgr, face, size=STUDIO_CROP_SIZE, grey=False),
                             pose=face.pose, confidence=face.score, frame_index=idx)
            counts[emotion] = counts.get(emotion, 0) + 1
            last = t
    store.close()
    return counts


def within_recording(base: str, methods: list[str], work: Path, log, rate_hz: float) -> dict:
    store_root = work / "studio"
    counts = clip_session(store_root, rate_hz)
    metrics = work / "before.json"
    run(["evaluate", base, "--data", str(store_root), "--split", "test", "--out", str(metrics)], log)
    before = json.loads(metrics.read_text())
    out = {"samples": counts, "test_samples": before["n"], "before": before["accuracy_all"]}
    for m in methods:
        model = work / "models" / f"clip-{m}"
        out[f"{m}_time"] = adapt(base, store_root, m, model, work, log)
        test = json.loads((work / "runs" / model.name / "test_metrics.json").read_text())
        out[m] = test["accuracy_all"]
    print(json.dumps(out), flush=True)
    return out


def startup_seconds(base: str, data: Path, work: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ferlib", "finetune", base, "--data", str(data), "--out",
                    str(work / "startup"), "--cache-dir", str(work / "cache"), "--run-dir", str(work / "runs" / "s")],
                   cwd=ROOT, check=True, capture_output=True)
    return round(time.monotonic() - t0, 2)


def markdown(res: dict, methods: list[str]) -> str:
    cs = res["cross_session"]
    lines = [f"# Personal models, {time.strftime('%Y-%m-%d')}: `ferlib finetune` then `ferlib predict`", "",
             f"Base: `{res['base']}`. Command: `{res['command']}`.", "",
             "## Cross-session (CK+ people; scripts/make_personal_sets.py)", "",
             "| person | A | B | before | " + " | ".join(methods) + " |",
             "|---|---|---|---|" + "---|" * len(methods)]
    for r in cs["rows"]:
        lines.append(f"| {r['person']} | {r['adapt_samples']} | {r['test_samples']} | {r['before']:.3f} | "
                     + " | ".join(f"{r[m]:.3f}" for m in methods) + " |")
    s = cs["summary"]
    lines.append(f"| **mean of {s['people']}** | | | **{s['before']:.3f}** | "
                 + " | ".join(f"**{s[m]:.3f}**" for m in methods) + " |")
    lines.append("| worst person | | | | " + " | ".join(f"{s[m + '_min']:.3f}" for m in methods) + " |")
    lines.append("| slowest adaptation, s (finetune command in-process, s) | | | | "
                 + " | ".join(f"{s[m + '_adapt_s_max']:.1f} ({s[m + '_command_s_max']:.1f})" for m in methods) + " |")
    if "within_recording" in res:
        w = res["within_recording"]
        lines += ["", "## Within one recording (Pexels clip as a Studio session, chunked 70/15/15)", "",
                  f"Samples {w['samples']}; test chunks: {w['test_samples']} samples (few: a rough figure).", "",
                  "| before | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods),
                  f"| {w['before']:.3f} | " + " | ".join(f"{w[m]:.3f}" for m in methods) + " |"]
    if "startup_s" in res:
        lines += ["", f"`python -m ferlib finetune` as a fresh process on one person's A (start-up, data and "
                  f"adaptation): {res['startup_s']:.1f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="/tmp/ferlib-personal")
    ap.add_argument("--base", default="resnet18_attention_fer2013_long")
    ap.add_argument("--methods", default="head,prototype,full,train")
    ap.add_argument("--limit", type=int, default=None, help="first N people only")
    ap.add_argument("--clip", action="store_true", help="also the within-recording split on the Pexels clip")
    ap.add_argument("--rate-hz", type=float, default=4.0, help="clip session: samples per second")
    ap.add_argument("--startup", action="store_true", help="also time one finetune as a fresh process")
    ap.add_argument("--out", required=True, help="OUT.json and OUT.md")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    os.environ.setdefault("FERLIB_DATA", tempfile.mkdtemp(prefix="ferlib-protocol-data-"))
    work = Path(tempfile.mkdtemp(prefix="ferlib-protocol-"))
    res = {"base": args.base, "command": "python scripts/personal_protocol.py " + " ".join(argv or sys.argv[1:])}
    with open(work / "log.txt", "w") as log:
        res["cross_session"] = cross_session(Path(args.sets), args.base, methods, work, log, args.limit)
        if args.clip:
            res["within_recording"] = within_recording(args.base, methods, work, log, args.rate_hz)
    if args.startup:
        first = sorted(p for p in Path(args.sets).iterdir() if (p / "A").is_dir())[0]
        res["startup_s"] = startup_seconds(args.base, first / "A", work)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res, methods))
    print(markdown(res, methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
