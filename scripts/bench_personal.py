"""Time `ferlib finetune BASE --data FOLDER --out OUT` (the default personal adaptation) on N samples.

    taskset -c 1 .venv/bin/python scripts/bench_personal.py --n 21 --n 2100 [--shared ../shared]

FOLDER: the first N/7 FER2013 Training images of each class, written to a temporary folder (never
into the repo). Each size runs the command twice as a fresh process: with a cold landmark/crop
cache (face finding included) and warm (what a Studio session is like: its samples are stored with
their crops and landmarks). Reports the whole command's wall time and the adaptation's own seconds
from the card. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def folder(shared: Path, n: int, out: Path) -> Path:
    per = max(1, n // 7)
    seen: dict[str, int] = {}
    with zipfile.ZipFile(shared / "data" / "fer2013.zip") as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) == 4 and parts[1] == "Training" and name.endswith(".jpg") and seen.get(parts[2], 0) < per:
                seen[parts[2]] = seen.get(parts[2], 0) + 1
                p = out / parts[2] / parts[3]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(z.read(name))
    return out


def run(base: str, data: Path, out: Path, cache: Path) -> dict:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ferlib", "finetune", base, "--data", str(data), "--out", str(out),
                    "--cache-dir", str(cache), "--run-dir", str(out.parent / "run")],
                   cwd=ROOT, check=True, capture_output=True)
    wall = time.monotonic() - t0
    report = json.loads(out.with_suffix(".json").read_text())["training"]["personal"]["report"]
    return {"command_s": round(wall, 1), "adapt_s": report["seconds"], "samples": report["samples"],
            "embeddings": report["embeddings"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, action="append", default=None)
    ap.add_argument("--base", default="resnet18_attention_fer2013_long")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ferlib-bench-personal-"))
    lines = [f"# `ferlib finetune` (default personal adaptation) time, {time.strftime('%Y-%m-%d')}", "",
             f"Base `{args.base}`; FER2013 Training images; `{' '.join(['python', 'scripts/bench_personal.py'] + (argv or sys.argv[1:]))}`", "",
             "| samples | cache | whole command, s | adaptation alone, s | embeddings |", "|---|---|---|---|---|"]
    for n in args.n or [21, 2100]:
        data = folder(Path(args.shared), n, work / f"data{n}")
        for cache in ("cold", "warm"):
            r = run(args.base, data, work / f"m{n}" / "me", work / f"cache{n}")
            lines.append(f"| {r['samples']} | {cache} | {r['command_s']} | {r['adapt_s']} | {r['embeddings']} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
