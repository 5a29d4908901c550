"""Raw model throughput on prepared tensors from the clip's real faces, per role x backend x
threads x batch, round-robin over the cells."""
from __future__ import annotations

import numpy as np
import torch

from ferlib.bench.config import BenchConfig
from ferlib.bench.roles import Runners, prepared
from ferlib.bench.timing import log, spread, time_calls
from ferlib.inference.checkpoint import card_spec


def bench_raw(cfg: BenchConfig, roles: dict, runners: Runners, frames, lm, idx, rounds: int = 5) -> list[dict]:
    """Raw model throughput on prepared tensors from real faces, per role x backend x threads x batch;
    every cell is timed in `rounds` rounds, round-robin over the cells (load changes hit all alike)."""
    cells = []
    for role, (model, card, _) in roles.items():
        spec = card_spec(card)
        batches = {b: prepared(spec, frames, lm, idx, b) for b in cfg.batches}
        with torch.inference_mode():
            ref = {b: model(x).float().numpy() for b, x in batches.items()}
        for backend in cfg.backends:
            for threads in cfg.threads:
                log(f"raw {role} {backend}, {threads} thread(s): export and check")
                run = runners(role, backend, threads)
                for b, x in batches.items():
                    torch.set_num_threads(threads)
                    diff = float(np.max(np.abs(run.outputs(x) - ref[b])))
                    cells.append(({"model": role, "backend": backend, "threads": threads, "batch": b,
                                   "max_abs_diff_vs_torch": diff}, lambda run=run, x=x: run.outputs(x)))
    log(f"raw models: {len(cells)} cells x {rounds} rounds")
    samples: list[list[float]] = [[] for _ in cells]
    for r in range(rounds):
        for (base, fn), out in zip(cells, samples):
            torch.set_num_threads(base["threads"])
            with torch.inference_mode():
                out += time_calls(fn, cfg.raw_seconds / rounds, warmup=3 if r == 0 else 1, min_iters=2)
    rows = []
    for (base, _), smp in zip(cells, samples):
        sp = spread(smp)
        rows.append({**base, **sp, "ms_per_face": sp["median_ms"] / base["batch"],
                     "faces_per_s": 1e3 * base["batch"] / sp["median_ms"]})
    return rows
