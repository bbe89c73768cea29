#!/usr/bin/env python
"""speechssl.nn.conv_encoder.MaskedGroupNorm (group norm over valid frames, written as ~10
element-wise passes) against the fused F.group_norm, per sequence on its valid frames
(same result on valid frames) and on the whole batch (exact when nothing is padded).

The profile of bench_upstream_throughput.py puts the wav2vec / wav2vec 2.0 gap to s3prl
in this layer (s3prl calls nn.GroupNorm / Fp32GroupNorm); this isolates it.

    python benchmarks/bench_group_norm.py            # (8, 512, 16000), 5 repeats
    python benchmarks/bench_group_norm.py --quick    # (2, 512, 8000), 3 repeats
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_repo_to_path,
    fill_sizes,
    load_average,
    machine_header,
    median,
    table,
)

add_repo_to_path()
from speechssl.nn.conv_encoder import MaskedGroupNorm  # noqa: E402


def per_sequence(norm: MaskedGroupNorm, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """F.group_norm on each sequence's valid frames; padding left at zero."""
    out = torch.zeros_like(x)
    for b, n in enumerate(mask.sum(1).tolist()):
        out[b:b + 1, :, :n] = F.group_norm(x[b:b + 1, :, :n], norm.num_groups, norm.weight,
                                           norm.bias, norm.eps)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None, help="default 5 (--quick: 3)")
    args = p.parse_args()
    B, C, T = (2, 512, 8000) if args.quick else (8, 512, 16000)
    fill_sizes(args, repeats=(5, 3))
    repeats = args.repeats
    torch.set_num_threads(2)
    print(f"# MaskedGroupNorm vs F.group_norm\n\n{machine_header()}")
    print(f"- command: `{' '.join([sys.executable] + sys.argv)}`")
    print(f"- input ({B}, {C}, {T}) fp32, one sequence padded by 25 %, inference_mode, "
          f"median of {repeats}\n")
    x = torch.randn(B, C, T)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[min(1, B - 1), 3 * T // 4:] = False
    rows = []
    for groups in (1, C):  # wav2vec's norm (1 group) and wav2vec 2.0's first layer (C groups)
        norm = MaskedGroupNorm(groups, C)
        with torch.inference_mode():
            err = ((norm(x, mask) - per_sequence(norm, x, mask)) * mask[:, None]).abs().max()
            cases = [("MaskedGroupNorm (current)", lambda n=norm: n(x, mask)),
                     ("F.group_norm per sequence", lambda n=norm: per_sequence(n, x, mask)),
                     ("F.group_norm whole batch (no padding)",
                      lambda n=norm, g=groups: F.group_norm(x, g, n.weight, n.bias, n.eps))]
            times = {}
            for name, fn in cases:
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                times[name] = median(ts)
        base = times[cases[0][0]]
        for name, t in times.items():
            rows.append([groups, name, f"{t * 1000:.0f}", f"**{base / t:.1f}x**",
                         f"{float(err):.1e}" if "per sequence" in name else "-"])
    print(table(["groups", "implementation", "median ms", "speed-up vs current",
                 "max abs diff on valid frames"], rows))
    print(f"\n- load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
