"""Model time per face of every shipped emotion model, in one interleaved run.

    .venv/bin/python scripts/bench_shipped_models.py --out benchmarks

Inputs are built from real faces of the committed clip (ferlib.bench helpers); each model runs in
PyTorch and ONNX Runtime (exported and parity-checked by ferlib.inference.export), 1 thread, batch 1 and 64;
all cells are timed round-robin in several rounds so that load changes hit every model alike.
Prints a Markdown table (medians, p10/p90) and writes benchmarks/<date>-models.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from ferlib.bench import BenchConfig, Runners, bench_raw, clip_faces  # noqa: E402
from ferlib.faces.landmarks import LandmarkExtractor  # noqa: E402
from ferlib.fsutil import atomic_write_bytes  # noqa: E402
from ferlib.inference.checkpoint import load_checkpoint  # noqa: E402
from ferlib.inference.pipeline import shipped_models  # noqa: E402
from ferlib.io import iter_video  # noqa: E402
from ferlib.models import count_parameters  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per cell, over all rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="folder for the dated .md/.json (default: print only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    frames = list(iter_video(args.clip, max_frames=120))
    with LandmarkExtractor(mode="video") as ex:
        lm, idx, _ = clip_faces(frames, ex)
    roles, info = {}, {}
    for path in shipped_models():
        model, card = load_checkpoint(path)
        roles[path.stem] = (model, card, f"models/{path.stem}")
        info[path.stem] = {"model": card["model"]["name"], "params": count_parameters(model),
                           "accuracy_all": card.get("metrics", {}).get("test", {}).get("accuracy_all")}
    cfg = BenchConfig(clip=args.clip, batches=(1, 64), threads=(1,), backends=("torch", "onnx"),
                      raw_seconds=args.seconds)
    rows = bench_raw(cfg, roles, Runners(roles), frames, lm, idx, rounds=args.rounds)
    now = datetime.now(timezone.utc)
    lines = [f"# Shipped models, time per face ({now:%Y-%m-%d %H:%M} UTC)", "",
             f"Command: `.venv/bin/python scripts/bench_shipped_models.py --out benchmarks`; 1 thread; "
             f"{len(lm)} real faces from `{args.clip.name}`; load average at the end {os.getloadavg()[0]:.2f} "
             "(2 shared cores).", "",
             "| model | architecture | parameters | PrivateTest accuracy (misses wrong) | backend | batch | "
             "median ms | p10 ms | p90 ms | ms per face | faces/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = info[r["model"]]
        acc = "n/a" if m["accuracy_all"] is None else f"{100 * m['accuracy_all']:.1f} %"
        lines.append(f"| {r['model']} | {m['model']} | {m['params']:,} | {acc} | {r['backend']} | {r['batch']} | "
                     f"{r['median_ms']:.3f} | {r['p10_ms']:.3f} | {r['p90_ms']:.3f} | {r['ms_per_face']:.3f} | "
                     f"{r['faces_per_s']:,.0f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        stem = args.out / f"{now:%Y-%m-%d}-models"
        atomic_write_bytes(stem.with_suffix(".md"), md.encode())
        atomic_write_bytes(stem.with_suffix(".json"), json.dumps({"rows": rows, "models": info}, indent=1).encode())


if __name__ == "__main__":
    main()
