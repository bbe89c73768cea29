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
         weight: float, device: torch.device, precision: str, grad_clip: float):
    """One update: ``module(*inputs)`` under autocast (a loss tensor, or a dict holding
    ``loss``), backward, gradient clipping, optimizer step; advances ``state``'s step and
    pos. Returns (the module's output, the gradient norm before clipping).

    ``weight``: this rank's share of the global batch. DistributedDataParallel averages the
    ranks' gradients, so R x weight_r makes their mean the global batch's loss gradient."""
    with autocast(device, precision):
        out = module(*inputs)
    loss = out["loss"] if isinstance(out, dict) else out
    opt.zero_grad(set_to_none=True)
    world_size = dist.world().world_size
    if world_size == 1:
        loss.backward()
    else:
        (loss * (world_size * weight)).backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    state["step"] += 1
    state["pos"] += 1
    return out, grad_norm
