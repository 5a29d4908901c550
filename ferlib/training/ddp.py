"""Data-parallel training on CPU processes: torch DistributedDataParallel over gloo.

`train_ddp` runs `ferlib.training.train.train` - the one training loop - in `world` spawned processes
(torch.multiprocessing, spawn: MediaPipe and torch threads must not be forked). Each rank gets a
`ferlib.training.train.Shard`: every rank draws the same global order, takes rows `rank::world` of each
global batch of `config.batch_size` rows, and DistributedDataParallel averages the gradients in
backward, so every rank steps the same weights. With equal halves and no batch statistics, that
is the gradient of the whole batch up to float summation order: a single-process run's steps.

What differs from a single process (docs/scale.md): batch norm normalises each rank's rows with
their own statistics (and keeps rank 0's running statistics: DDP broadcasts its buffers);
class-weighted cross-entropy is a weighted mean per rank, averaged; augmentation and dropout draw
from per-rank seeds. Every rank validates the whole validation set (identical weights give
identical decisions for the best epoch and early stopping); rank 0 alone writes the run folder and
reports events, which reach `callback` in this process through a queue.

The ranks meet through a file in a temporary folder (no port) and gloo talks over the loopback
interface only (GLOO_SOCKET_IFNAME=lo unless set). CPU only: the device must be "cpu".
"""
from __future__ import annotations

import copy
import os
import queue
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ferlib.errors import InputError
from ferlib.fsutil import atomic_file
from ferlib.inputs import TensorSet
from ferlib.models.registry import FerModel
from ferlib.training.train import Shard, TrainConfig, TrainResult, train

LOOPBACK = "lo0" if sys.platform == "darwin" else "lo"


def _reduce(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _wrap(model: nn.Module) -> nn.Module:
    return nn.parallel.DistributedDataParallel(model)


def _rank_main(rank: int, world: int, folder: str, model: FerModel, train_data: TensorSet, val_data: TensorSet,
               config: TrainConfig, events, run_dir, teacher_probs, raw_landmarks) -> None:
    """One rank: join the group, train its shard, rank 0 saves the weights and the result."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK)
    if config.num_threads <= 0:  # torch's default (every core) in each rank would oversubscribe them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'rendezvous'}", rank=rank,
                            world_size=world, timeout=timedelta(minutes=30))
    try:
        model = copy.deepcopy(model)  # the spawned copy shares its parameters' memory with the other ranks
        callback = (lambda ev: events.put(ev)) if rank == 0 else None
        result = train(model, train_data, val_data, config, callback=callback, run_dir=run_dir if rank == 0 else None,
                       teacher_probs=teacher_probs, raw_landmarks=raw_landmarks,
                       shard=Shard(rank, world, wrap=_wrap, reduce=_reduce))
        if rank == 0:
            with atomic_file(Path(folder) / "result.pt", "the data-parallel result ") as f:
                torch.save({"state": model.state_dict(), "result": result.to_dict()}, f)
    finally:
        dist.destroy_process_group()


def train_ddp(model: FerModel, train_data: TensorSet, val_data: TensorSet, config: TrainConfig, *, world: int = 2,
              callback: Callable[[dict], None] | None = None, cancel=None, run_dir=None,
              teacher_probs: torch.Tensor | None = None, raw_landmarks=None) -> TrainResult:
    """`ferlib.training.train.train` on `world` CPU processes (DistributedDataParallel, gloo). `model` ends
    holding the best-validation weights (rank 0's, which every rank shares), as with `train`.
    world 1 is `train` itself. cancel is not supported here (the ranks cannot stop together)."""
    if world < 1:
        raise InputError(f"data-parallel processes must be at least 1, got {world}")
    if world == 1:
        return train(model, train_data, val_data, config, callback=callback, cancel=cancel, run_dir=run_dir,
                     teacher_probs=teacher_probs, raw_landmarks=raw_landmarks)
    config = config.resolved()
    if config.device != "cpu":
        raise InputError(f"data-parallel training runs on CPU processes (gloo); device is {config.device!r} "
                         "(--device cpu)")
    if cancel is not None:
        raise InputError("data-parallel training cannot be cancelled mid-run; leave cancel out")
    if config.batch_size < 2 * world:
        raise InputError(f"batch size {config.batch_size} gives a rank fewer than 2 rows: at least {2 * world} "
                         f"for {world} processes")
    if len(train_data) < 2 * world:
        raise InputError(f"{len(train_data)} training samples for {world} processes: need at least {2 * world}")
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="ferlib-ddp-") as folder:
        procs = mp.start_processes(_rank_main, nprocs=world, join=False, start_method="spawn",
                                   args=(world, folder, model, train_data, val_data, config, events, run_dir,
                                         teacher_probs, raw_landmarks))

        def drain() -> None:
            while True:
                try:
                    ev = events.get_nowait()
                except queue.Empty:
                    return
                if callback is not None:
                    callback(ev)

        try:
            while not procs.join(timeout=0.2):
                drain()
        finally:
            for p in procs.processes:
                if p.is_alive():
                    p.terminate()
        drain()
        result_file = Path(folder) / "result.pt"
        out = torch.load(result_file, weights_only=True)
    model.load_state_dict(out["state"])
    model.eval()
    return TrainResult(**out["result"])


__all__ = ["train_ddp"]
