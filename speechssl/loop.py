"""The one step loop of probe training and pre-training, readable top to bottom in its
callers (nanoGPT's loop, shared): a training state that resumes bit-identically, epochs of
global batches cut by a seeded sampler, this rank's share of each batch, the forward under
autocast, the share-weighted backward, clipping and the optimizer step.

What differs between the two stays in the callers, in plain sight: the lr schedule and
logging (speechssl/pretrain.py), dev evaluation and early stopping (speechssl/train.py).
Under torchrun every rank runs the loop on its share of each global batch
(docs/distributed.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from speechssl import distributed as dist
from speechssl.checkpoint import load_training_state
from speechssl.errors import SpeechSSLError
from speechssl.runtime import autocast


def resume(run_dir: Path, model: nn.Module, opt: torch.optim.Optimizer, fresh: dict,
           what: str) -> dict:
    """The training state of ``run_dir/last`` (model and optimizer restored), or ``fresh``;
    every state counts ``step`` (updates done), ``epoch`` and ``pos`` (batches of that
    epoch done)."""
    saved = load_training_state(run_dir / "last", model, opt)
    state = {"step": 0, "epoch": 0, "pos": 0, **fresh, **(saved or {})}  # keys added since
    if state["step"] and dist.is_main():
        print(f"[{what}] resuming {run_dir} from step {state['step']}")
    return state


def shares(global_batches: Iterable[list[int]],
           sizes: Sequence[float] | None = None) -> list[tuple[list[int], float]]:
    """This rank's (item indices, weight) of each global batch
    (:func:`speechssl.distributed.shard_batch`: weighted by ``sizes``, or by item count)."""
    info = dist.world()
    return [dist.shard_batch(b, sizes, info.rank, info.world_size) for b in global_batches]


def batches(sampler, state: dict, load: Callable[[list[list[int]]], Iterable]) -> Iterator:
    """This rank's batches from where ``state`` stands, epoch after epoch; endless (the
    caller stops). ``load(global_batches)`` turns the rest of an epoch's global batches into
    what the caller steps on; ``state["pos"]`` counts the ones done (:func:`step`), and the
    epoch rolls over when they are used up."""
    while True:
        sampler.set_epoch(state["epoch"])
        epoch = list(sampler)
        if not epoch:
            raise SpeechSSLError("the training split has no batches: it is empty")
        yield from load(epoch[state["pos"]:])
        state["epoch"], state["pos"] = state["epoch"] + 1, 0


def step(module: nn.Module, inputs: tuple, opt: torch.optim.Optimizer, state: dict, *,
         weight: float, device: torch.device, precision: str, grad_clip: float,
         accumulate: int = 1):
    """One batch: ``module(*inputs)`` under autocast (a loss tensor, or a dict holding
    ``loss``) and its backward; every ``accumulate``-th batch (s3prl's
    ``gradient_accumulate_steps``; 1 = every batch) also clips the summed gradients and
    steps the optimizer, each batch's loss weighted 1 / ``accumulate`` so the update is that
    of their mean. Advances ``state``'s pos (batches) and, on an update, its step (updates).
    Returns (the module's output, the gradient norm before clipping, or None when this
    batch only accumulated).

    ``weight``: this rank's share of the global batch. DistributedDataParallel averages the
    ranks' gradients, so R x weight_r makes their mean the global batch's loss gradient."""
    with autocast(device, precision):
        out = module(*inputs)
    loss = out["loss"] if isinstance(out, dict) else out
    micro = state.get("micro", 0)
    if micro == 0:
        opt.zero_grad(set_to_none=True)
    world_size = dist.world().world_size
    scale = (world_size * weight if world_size > 1 else 1.0) / accumulate
    if scale == 1.0:
        loss.backward()
    else:
        (loss * scale).backward()
    state["pos"] += 1
    state["micro"] = micro + 1
    if state["micro"] < accumulate:
        return out, None
    state["micro"] = 0
    params = [p for group in opt.param_groups for p in group["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    state["step"] += 1
    return out, grad_norm
