"""Throughput of `ferlib predict` and landmark extraction: local engine vs Ray with 1 and 2 workers.

    .venv/bin/python scripts/bench_scale.py [--n 96] [--repeats 3] [--pause-pid PID] [--out benchmarks/DATE-scale]

Inputs: the first N images of ../shared/data/affectnet_subset.zip (real faces, written to a
temporary folder, never into the repo). One run measures, interleaved over `--repeats` rounds:

* predict: `ferlib.inference.predict.predict` on one Pipeline in this process (local), and
  `ferlib.scale.predict_ray` with 1 and 2 actors on one local Ray cluster of 2 CPUs (images in
  tasks of `--image-batch`); fresh shard folders each time, so nothing is skipped;
* extract: `ferlib.data.cache.extract_landmarks` with workers=1 (in process) and with a
  `RayExtractRunner` of 1 and 2 actors; a fresh cache folder each time.

Throughput = images / seconds of the work alone (median over rounds); start-up (the Ray cluster,
the actors' Pipelines or extractors, the local Pipeline) is reported apart. `--pause-pid` stops
that process (kill -STOP) for the measurement and always resumes it (kill -CONT) afterwards.
Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd

from ferlib import scale
from ferlib.data.cache import DEFAULT_EXTRACTOR, extract_landmarks
from ferlib.fsutil import atomic_write_bytes
from ferlib.inference.pipeline import Pipeline, shipped_keypoint_model
from ferlib.inference.predict import predict

ROOT = Path(__file__).resolve().parents[1]


def images(shared: Path, n: int, out: Path) -> list[Path]:
    paths = []
    with zipfile.ZipFile(shared / "data" / "affectnet_subset.zip") as z:
        for name in sorted(z.namelist()):
            if name.lower().endswith((".png", ".jpg")) and len(paths) < n:
                p = out / name.replace("/", "_")
                p.write_bytes(z.read(name))
                paths.append(p)
    return paths


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x = (x * 31 + i) % 1000003
    return x


def parallelism(n: int = 2_000_000, rounds: int = 3) -> dict:
    """The machine's free parallelism now: a pure-Python loop in 1 process vs the same loop in 2
    processes at once (spawn). 2.0 = two free cores, 1.0 = one."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ratios = []
    with ctx.Pool(2) as pool:
        pool.map(_spin, [1000, 1000])  # started
        for _ in range(rounds):
            t0 = time.perf_counter()
            pool.map(_spin, [n])
            one = time.perf_counter() - t0
            t0 = time.perf_counter()
            pool.map(_spin, [n, n], chunksize=1)
            two = time.perf_counter() - t0
            ratios.append(round(2 * one / two, 2))
    return {"two_processes_vs_one": ratios, "median": statistics.median(ratios)}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="images (default 96)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-batch", type=int, default=8)
    ap.add_argument("--model", default=None, help="predict model (default: the shipped default)")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--pause-pid", type=int, default=None, help="a process to stop while measuring (resumed after)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / f"{time.strftime('%Y-%m-%d')}-scale"))
    ap.add_argument("--note", default="", help="what else the machine was doing (goes into the report)")
    ap.add_argument("--from-json", default=None, help="only rewrite OUT.md from this report (no measuring)")
    args = ap.parse_args(argv)
    if args.from_json:
        write(json.loads(Path(args.from_json).read_text()), Path(args.out))
        return 0
    work = Path(tempfile.mkdtemp(prefix="ferlib-bench-scale-"))
    (work / "img").mkdir()
    paths = images(Path(args.shared), args.n, work / "img")
    kp = str(shipped_keypoint_model())
    settings = scale.PredictSettings(model=args.model, keypoint_model=kp)
    df = pd.DataFrame({"path": [str(p) for p in paths], "label": "happy", "split": "train"})
    before = machine()
    paused = False
    if args.pause_pid:
        os.kill(args.pause_pid, signal.SIGSTOP)
        paused = True
    try:
        free_before = parallelism()
        report = measure(args, paths, settings, df, work, kp)
        report["free_parallelism"] = {"before": free_before, "after": parallelism()}
    finally:
        if paused:
            os.kill(args.pause_pid, signal.SIGCONT)
    report["machine"] = {"before": before, "after": machine(),
                         "paused_pid": args.pause_pid,
                         "note": args.note}
    report["command"] = "python scripts/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write(report, Path(args.out))
    return 0


def measure(args, paths, settings, df, work: Path, kp: str) -> dict:
    n = len(paths)
    res: dict = {"n_images": n, "repeats": args.repeats, "image_batch": args.image_batch,
                 "predict": {"local": [], "ray1": [], "ray2": []}, "extract": {"local": [], "ray1": [], "ray2": []},
                 "startup_s": {}, "cpu_per_image_ms": {"predict": {"local": [], "ray1": [], "ray2": []},
                                                       "extract": {"local": [], "ray1": [], "ray2": []}}}
    cpu = res["cpu_per_image_ms"]
    res["actor_cpu_share"] = {"ray1": [], "ray2": []}
    t0 = time.perf_counter()
    pipe = Pipeline(args.model, smoothing=settings.smoothing, keypoint_model=kp, threads=1)
    res["startup_s"]["local_pipeline"] = time.perf_counter() - t0
    res["model"] = pipe.name
    t0 = time.perf_counter()
    ray, started = scale.start_ray(None, 2)
    res["startup_s"]["ray_cluster_2cpus"] = time.perf_counter() - t0
    res["ray"] = ray.__version__
    res["startup_s"]["ray_actors"] = {"1": [], "2": []}
    res["startup_s"]["ray_extract_actors"] = {"1": [], "2": []}
    try:
        for r in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            rep = predict([str(p) for p in paths], pipe)
            res["predict"]["local"].append(n / (time.perf_counter() - t0))
            cpu["predict"]["local"].append(1e3 * (time.process_time() - c0) / n)
            assert len(rep.errors) == 0, rep.errors
            for w in (1, 2):
                run = scale.predict_ray([str(p) for p in paths], settings, work / f"shards-{r}-{w}", workers=w,
                                        image_batch=args.image_batch, progress=False)
                assert run.workers == w and run.skipped == 0
                res["predict"][f"ray{w}"].append(n / run.compute_s)
                cpu["predict"][f"ray{w}"].append(1e3 * run.cpu_s / n)
                res["actor_cpu_share"][f"ray{w}"].append(round(run.cpu_s / run.task_s, 3))
                res["startup_s"]["ray_actors"][str(w)].append(run.startup_s)
            t0, c0 = time.perf_counter(), time.process_time()
            ex = extract_landmarks(df, cache_dir=work / f"cache-{r}-local", workers=1, progress=False)
            res["extract"]["local"].append(n / (time.perf_counter() - t0))
            cpu["extract"]["local"].append(1e3 * (time.process_time() - c0) / n)
            res["detection_rate"] = ex.detection_rate
            for w in (1, 2):
                runner = scale.RayExtractRunner(workers=w)
                t0 = time.perf_counter()
                runner._pool(dict(DEFAULT_EXTRACTOR), None)
                ray.get([a.run.remote([]) for a in runner._actors])  # the actors' extractors are built
                res["startup_s"]["ray_extract_actors"][str(w)].append(time.perf_counter() - t0)
                c0 = sum(ray.get([a.cpu_seconds.remote() for a in runner._actors]))
                t0 = time.perf_counter()
                extract_landmarks(df, cache_dir=work / f"cache-{r}-{w}", runner=runner, progress=False)
                res["extract"][f"ray{w}"].append(n / (time.perf_counter() - t0))
                c1 = sum(ray.get([a.cpu_seconds.remote() for a in runner._actors]))
                cpu["extract"][f"ray{w}"].append(1e3 * (c1 - c0) / n)
                for a in runner._actors:
                    ray.kill(a)
                runner.close()
    finally:
        pipe.close()
        if started:
            ray.shutdown()
    for kind in ("predict", "extract"):
        med = {k: statistics.median(v) for k, v in res[kind].items()}
        res[kind] = {"per_s": {k: [round(x, 2) for x in v] for k, v in res[kind].items()},
                     "median_per_s": {k: round(v, 2) for k, v in med.items()},
                     "speedup_2_vs_1": round(med["ray2"] / med["ray1"], 3),
                     "ray1_vs_local": round(med["ray1"] / med["local"], 3)}
    for kind in ("predict", "extract"):
        cpu[kind] = {k: round(statistics.median(v), 2) for k, v in cpu[kind].items()}
    res["startup_s"] = json.loads(json.dumps(res["startup_s"], default=float),
                                  parse_float=lambda s: round(float(s), 2))
    return res


def write(r: dict, out: Path) -> None:
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(r, indent=2).encode())
    m = r["machine"]
    s = r["startup_s"]
    lines = [f"# Scale-out throughput: local engine vs Ray 1 and 2 workers, {time.strftime('%Y-%m-%d')}", "",
             f"Command: `{r['command']}`", "",
             f"{r['n_images']} AffectNet-subset images (real faces; face found in {r['detection_rate']:.1%}), "
             f"{r['repeats']} interleaved rounds, medians; Ray {r['ray']}, a local cluster of 2 CPUs "
             f"(127.0.0.1, no dashboard); predict model `{r['model']}` (ONNX Runtime, 1 thread), images in tasks "
             f"of {r['image_batch']}.", "",
             "| work | local engine (1 process) | Ray, 1 worker | Ray, 2 workers | 2 workers / 1 | Ray 1 / local |",
             "|---|---|---|---|---|---|"]
    for kind, unit in (("predict", "images/s"), ("extract", "images/s (landmarks)")):
        k = r[kind]["median_per_s"]
        lines.append(f"| {kind} ({unit}) | {k['local']:.1f} | {k['ray1']:.1f} | {k['ray2']:.1f} | "
                     f"**{r[kind]['speedup_2_vs_1']:.2f}x** | {r[kind]['ray1_vs_local']:.2f} |")
    c = r["cpu_per_image_ms"]
    lines += ["", "CPU time per image (ms, every thread of the processes doing the work, medians: what one image "
              "costs a dedicated core, whatever else the machine runs), and the cores the work really got "
              "(images/s x CPU s per image):", "",
              "| work | local: CPU ms/image | cores used | Ray 1: CPU ms/image | cores used | Ray 2: CPU ms/image "
              "| cores used | 1 / (Ray 2 CPU s per image), images/s per free core |", "|---|---|---|---|---|---|---|---|"]
    for kind in ("predict", "extract"):
        k, ck = r[kind]["median_per_s"], c[kind]
        cores = {w: k[w] * ck[w] / 1e3 for w in ("local", "ray1", "ray2")}
        lines.append(f"| {kind} | {ck['local']:.1f} | {cores['local']:.2f} | {ck['ray1']:.1f} | {cores['ray1']:.2f} | "
                     f"{ck['ray2']:.1f} | {cores['ray2']:.2f} | {1e3 / ck['ray2']:.0f} |")
    if "actor_cpu_share" in r:
        sh = r["actor_cpu_share"]
        lines += ["", "CPU an actor got while running its predict tasks (its CPU seconds / the tasks' wall seconds; "
                  f"1.0 = a core of its own), per round: 1 worker {sh['ray1']}; 2 workers {sh['ray2']}."]
    if "free_parallelism" in r:
        fp = r["free_parallelism"]
        lines += ["", "The machine's free parallelism (a pure-Python loop in 2 processes at once vs 1: 2.0 = two free "
                  f"cores, 1.0 = one): before {fp['before']['two_processes_vs_one']}, after "
                  f"{fp['after']['two_processes_vs_one']}."]
    lines += ["", "Start-up, apart from the figures above: local Pipeline "
              f"{s['local_pipeline']:.1f} s; Ray cluster (2 CPUs) {s['ray_cluster_2cpus']:.1f} s; predict actors "
              f"(process, imports, Pipeline) 1: {s['ray_actors']['1']} s, 2: {s['ray_actors']['2']} s; extract "
              f"actors 1: {s['ray_extract_actors']['1']} s, 2: {s['ray_extract_actors']['2']} s.", "",
              "Per round (images/s): " + "; ".join(f"{kind} {k}: {v}" for kind in ("predict", "extract")
                                                     for k, v in r[kind]["per_s"].items()), "",
              f"Machine: {m['before']['cpus']} CPUs, {m['before']['platform']}, Python {m['before']['python']}; "
              f"load average (1/5/15 min) before {m['before']['loadavg_1_5_15']}, after "
              f"{m['after']['loadavg_1_5_15']}."
              + (f" Process {m['paused_pid']} was stopped with SIGSTOP for the measurement and resumed with "
                 "SIGCONT right after." if m["paused_pid"] else " Nothing was paused.")
              + (f" {m['note']}" if m.get("note") else "")]
    atomic_write_bytes(out.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
