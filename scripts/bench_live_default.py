"""Time per frame of every shipped emotion model's whole pipeline on the committed clip, in one run.

    taskset -c 0 .venv/bin/python scripts/bench_live_default.py [--out benchmarks/DATE-live-default.md]

Each model gets the Pipeline the Live page makes (video mode, ONNX Runtime where the model exports,
face mesh only for models that need landmarks); every clip frame (decoded once, beforehand) goes
through each pipeline in turn, so all of them see the same load. Reports the median and p95 ms per
frame and the frames per second the median allows. Run it pinned to one core (taskset) to answer
"does it hold 30 fps on one core".
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ferlib.fsutil import emit_report  # noqa: E402
from ferlib.inference.pipeline import Pipeline, shipped_models  # noqa: E402
from ferlib.inference.predict import expand_inputs  # noqa: E402
from ferlib.io import iter_video, load_image  # noqa: E402

CLIP = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"


def stills_table(folder: Path) -> list[str]:
    """The default model on still images, face mesh off (its default) and on, interleaved per image."""
    images = [load_image(p) for p in sorted(expand_inputs([folder]))[:200]]
    pipes = {mesh: Pipeline(mode="static", backend="auto", mesh=mesh) for mesh in (False, True)}
    times = {mesh: [] for mesh in pipes}
    for img in images:
        for mesh, p in pipes.items():
            t0 = time.perf_counter()
            p.process(img)
            times[mesh].append((time.perf_counter() - t0) * 1e3)
    name = pipes[False].name
    for p in pipes.values():
        p.close()
    off, on = (np.median(times[m][3:]) for m in (False, True))
    return ["", f"Stills: `{name}` on {len(images)} images of `{folder}`, interleaved per image:", "",
            "| face mesh | median ms/image | p95 ms |", "|---|---|---|",
            *(f"| {'on' if m else 'off (default)'} | {np.median(times[m][3:]):.1f} | {np.percentile(times[m][3:], 95):.1f} |"
              for m in (False, True)),
            "", f"Skipping face mesh saves {on - off:.1f} ms per image ({on / off:.2f}x)."]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="Markdown file to write")
    ap.add_argument("--models", nargs="*", default=None, help="card paths (default: every shipped model)")
    ap.add_argument("--stills", default=None, help="a folder of images: also time the default model on them "
                                                    "without and with face mesh (what skipping it saves)")
    ap.add_argument("--frontalize-off-too", action="store_true",
                    help="also time each model with Pipeline(frontalize=False): what reading turned faces costs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    frames = [(ts, bgr) for _, ts, bgr in iter_video(CLIP)]
    models = [Path(m) for m in args.models] if args.models else shipped_models()
    pipes = {m.stem: Pipeline(m, backend="auto", fallback_model=None) for m in models}
    if args.frontalize_off_too:
        pipes.update({f"{m.stem}, frontalize off": Pipeline(m, backend="auto", fallback_model=None, frontalize=False)
                      for m in models})
    times = {k: [] for k in pipes}
    for ts, bgr in frames:
        for k, p in pipes.items():
            t0 = time.perf_counter()
            p.process(bgr, ts)
            times[k].append((time.perf_counter() - t0) * 1e3)
    lines = [f"# Live pipeline per frame, every shipped model ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
             "", f"`{' '.join(sys.argv)}`; {len(frames)} frames of the committed 640x360 clip, models interleaved "
             "per frame, torch 1 thread; face mesh runs for models that need landmarks, and for image models "
             "on frames of at most FRONTAL_MAX_FACES faces (ferlib.faces.crops.turned faces are frontalised).", "",
             "| model | runtime | face mesh | median ms/frame | p95 ms | fps at the median |", "|---|---|---|---|---|---|"]
    for k, p in sorted(pipes.items(), key=lambda kv: np.median(times[kv[0]])):
        t = np.asarray(times[k][5:])  # the first frames start the graphs
        mesh = "yes" if p.extractor.mesh else f"<= {p.extractor.mesh_max_faces} faces" if p.extractor.mesh_max_faces else "no"
        lines.append(f"| `{k}` | {p.backend} | {mesh} | {np.median(t):.1f} | "
                     f"{np.percentile(t, 95):.1f} | {1000 / np.median(t):.0f} |")
        p.close()
    if args.stills:
        lines += stills_table(Path(args.stills))
    text = "\n".join(lines) + "\n"
    emit_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
