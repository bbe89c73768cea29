#!/usr/bin/env python
"""Pre-training step time of each audio upstream, fp32 against bf16 autocast
(``precision=bf16``), in one run, on the CPU or a GPU.

A step is what ``speechssl/pretrain.py`` runs: ``pretrain_loss`` forward (under
``speechssl.runtime.autocast``), backward, gradient clipping, AdamW step, ``after_step``.
Each upstream is built from its recipe as run.py composes it (``upstream=NAME``: the CPU
default size; ``--set KEY=VALUE`` adds the override ``upstream.KEY=VALUE``, e.g.
``--set hidden_size=768``) with random weights and trained on one fixed batch of
seeded noise (default 4 x 10 s); the two precisions alternate repeat by repeat (each
starting from the same weights), so load drifts hit both alike. Printed: median ms per
step, the speed-up fp32 / bf16 (> 1: bf16 is faster) and, on CUDA, the peak memory of each.

    python benchmarks/bench_pretrain_step.py                          # every audio upstream
    python benchmarks/bench_pretrain_step.py --device cuda --batch 8
    python benchmarks/bench_pretrain_step.py --only apc,wav2vec2 --repeats 3
    python benchmarks/bench_pretrain_step.py --quick     # 2 x 1 s, 1 repeat of 1 step

HuBERT is left out: its targets need a k-means fit on a corpus (``prepare``), which is not
a step; its step is wav2vec 2.0's encoder with a classification loss.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_repo_to_path,
    compose_config,
    fill_sizes,
    fmt,
    machine_header,
    median,
    set_overrides,
    table,
)

UPSTREAMS = ("apc", "vq_apc", "npc", "mockingjay", "tera", "vqvae", "cpc", "wav2vec",
             "vq_wav2vec", "wav2vec2", "data2vec")


def build(name: str, overrides: list[str]) -> torch.nn.Module:
    """A random-init upstream of the composed config ``upstream=name`` + ``overrides``."""
    from speechssl.upstream.load import build_from_config

    cfg = compose_config([f"upstream={name}", *overrides])
    torch.manual_seed(0)
    return build_from_config(cfg.upstream)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, state: dict, wavs, lengths, device, precision: str, steps: int):
    """Median seconds per step over ``steps`` steps from ``state`` (weights restored first),
    and the peak CUDA memory (bytes; None on the CPU)."""
    from speechssl.runtime import autocast

    model.load_state_dict(state)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(1, steps + 1):
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            out = model.pretrain_loss(wavs, lengths)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.after_step(step)
        sync(device)
        times.append(time.perf_counter() - t0)
        if not torch.isfinite(out["loss"].detach()):
            raise SystemExit(f"{precision}: loss is not finite at step {step}")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return median(times), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 x 1 s batch, 1 repeat of 1 step; a CUDA device that is absent "
                        "falls back to the CPU")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--only", default="", help="comma-separated upstream names")
    p.add_argument("--batch", type=int, default=None, help="default 4 (--quick: 2)")
    p.add_argument("--seconds", type=float, default=None, help="default 10 (--quick: 1)")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternating fp32/bf16 repeats (default 3, --quick: 1)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per repeat (median; default 3, --quick: 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="upstream option for every model, e.g. hidden_size=768")
    args = p.parse_args()
    fill_sizes(args, batch=(4, 2), seconds=(10.0, 1.0), repeats=(3, 1), steps=(3, 1))
    add_repo_to_path()
    from speechssl.runtime import resolve_device

    note = ""
    if args.quick and args.device.startswith("cuda") and not torch.cuda.is_available():
        note = f"- NOTE: --device {args.device}: CUDA is not available, ran on the CPU\n"
        args.device = "cpu"
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    overrides = set_overrides("upstream", args.set, lambda msg: p.error(f"--set {msg}"))
    names = [n for n in args.only.split(",") if n] or list(UPSTREAMS)
    g = torch.Generator().manual_seed(0)
    wavs = (0.1 * torch.randn(args.batch, int(args.seconds * 16000), generator=g)).to(device)
    lengths = torch.full((args.batch,), wavs.shape[1], dtype=torch.long, device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(machine_header())
    options = " ".join(o.removeprefix("++") for o in overrides)
    print(f"{note}- device: {where}; batch {args.batch} x {args.seconds:g} s; {args.repeats} "
          f"repeats x {args.steps} steps per precision, alternating; options "
          f"{options or 'recipe'}\n")
    rows = []
    for name in names:
        model = build(name, overrides).to(device)
        state = copy.deepcopy(model.state_dict())
        time_steps(model, state, wavs, lengths, device, "fp32", 1)  # warm-up
        time_steps(model, state, wavs, lengths, device, "bf16", 1)
        runs = {"fp32": [], "bf16": []}
        peaks = {}
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                t, peaks[precision] = time_steps(model, state, wavs, lengths, device, precision,
                                                 args.steps)
                runs[precision].append(t)
        f32, b16 = median(runs["fp32"]), median(runs["bf16"])
        params = sum(q.numel() for q in model.parameters() if q.requires_grad)
        mem = ([fmt(peaks["fp32"] / 2**30), fmt(peaks["bf16"] / 2**30)]
               if device.type == "cuda" else ["-", "-"])
        rows.append([name, fmt(params / 1e6), fmt(1e3 * f32), fmt(1e3 * b16),
                     f"**{fmt(f32 / b16)}**", *mem])
        print(f"{name}: fp32 {[round(1e3 * t) for t in runs['fp32']]} ms, "
              f"bf16 {[round(1e3 * t) for t in runs['bf16']]} ms", file=sys.stderr)
        del model
    print(table(["upstream", "params M", "ms/step fp32", "ms/step bf16", "fp32 / bf16",
                 "peak GiB fp32", "peak GiB bf16"], rows))


if __name__ == "__main__":
    main()
