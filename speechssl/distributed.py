"""torchrun / DistributedDataParallel in one place: init from torchrun's environment, rank
queries, barriers, and the per-batch sharding that keeps N processes on the single-process
trajectory. PyTorch DDP: Li et al., 2020, "PyTorch Distributed: Experiences on Accelerating
Data Parallel Training" (VLDB).

Semantics (docs/distributed.md): a batch is the *global* batch of a single-process run
(``batch_seconds`` / ``batch_tokens`` stay the global budget); rank ``r`` of ``R`` takes a
contiguous share of every batch and scales its loss by its share, so DDP's gradient average
equals the gradient of the global batch's loss. Saved state counts global batches and
holds unwrapped weights, so a run resumes at any world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from speechssl.errors import ConfigError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class WorldInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def env_world(environ: dict[str, str] | None = None) -> WorldInfo:
    """The world torchrun describes in ``environ`` (default os.environ); a plain process
    (no WORLD_SIZE) is rank 0 of 1. Raises ConfigError naming a missing or bad variable."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return WorldInfo()
    missing = [k for k in ENV if k not in env]
    if missing:
        raise ConfigError(f"distributed run: environment variable(s) {', '.join(missing)} "
                          f"not set; launch with `torchrun --nproc_per_node=N run.py ...`")
    try:
        info = WorldInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))
    except ValueError:
        raise ConfigError("distributed run: RANK, WORLD_SIZE and LOCAL_RANK must be "
                          f"integers, got {env['RANK']!r}, {env['WORLD_SIZE']!r}, "
                          f"{env['LOCAL_RANK']!r}") from None
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ConfigError(f"distributed run: need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, "
                          f"got RANK={info.rank}, WORLD_SIZE={info.world_size}, "
                          f"LOCAL_RANK={info.local_rank}")
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> WorldInfo:
    """This process's place in the initialised process group (rank 0 of 1 without one)."""
    if not is_initialized():
        return WorldInfo()
    return WorldInfo(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the rank that writes files."""
    return world().rank == 0


def init(device: str = "auto") -> WorldInfo:
    """Join torchrun's process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU); no-op
    otherwise. ``device`` is the config's device; with CUDA, rank uses cuda:LOCAL_RANK."""
    info = env_world()
    if info.world_size == 1 or is_initialized():
        return info
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    # rank 0 alone scores dev/test while the others wait: allow long waits
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=info.rank,
                            world_size=info.world_size, timeout=timedelta(hours=3))
    return info


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` in a distributed CUDA run, else ``device``."""
    if device.type == "cuda" and is_initialized():
        return torch.device("cuda", world().local_rank)
    return device


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the body first (e.g. synthesizes a corpus, fits k-means, writes a cache),
    then the other ranks run it and find the result on disk."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks (a detached copy; ``value`` itself unchanged)."""
    out = value.detach().clone()
    if is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of ``n`` items; shares differ by at most
    one item, the first ``n % world_size`` ranks taking the larger ones."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard_batch(batch: Sequence[int], sizes: Sequence[float] | None, rank: int,
                world_size: int) -> tuple[list[int], float]:
    """This rank's share of a global batch and the weight of its loss.

    Args:
        batch: item indices of the global batch (B,).
        sizes: per-item size of the whole dataset (N,) to weight by (e.g. seconds, the unit
            of a frame-averaged loss), or None to weight by item count (per-item mean loss).
        rank, world_size: this rank and the number of ranks R.

    Returns:
        (indices, weight): weights over the R ranks sum to 1; the global loss is
        sum_r weight_r * loss_r. A rank whose share is empty (B < R) gets the batch's first
        item with weight 0, so every rank still runs forward and backward as DDP requires.
    """
    start, stop = shard_bounds(len(batch), rank, world_size)
    mine = list(batch[start:stop])
    if not mine:
        return [batch[0]], 0.0
    if sizes is None:
        return mine, len(mine) / len(batch)
    total = sum(sizes[i] for i in batch)
    if total <= 0:
        return mine, len(mine) / len(batch)
    return mine, sum(sizes[i] for i in mine) / total


def wrap_ddp(module: nn.Module) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when a process group is up, else itself.
    Parameters that one step does not reach (heads used only by some losses) are allowed."""
    if not is_initialized() or world().world_size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, find_unused_parameters=True)


def seed_rank(seed: int, step: int) -> None:
    """Give ranks > 0 their own random stream (dropout, masking) from (seed, rank, step);
    rank 0 keeps the single-process stream, so a 1-process run is unchanged."""
    info = world()
    if info.rank > 0:
        torch.manual_seed((seed * 1_000_003 + info.rank * 7_919 + step) % (2**63))
