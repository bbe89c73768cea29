#!/usr/bin/env python
"""Probe training speed with frozen features read from the cache against on-the-fly
extraction (the upstream forward on every step, as s3prl's downstream runner does):
same task, same probe, same batches, in one run.

Path 1 (cache): every train item's features are extracted once
(speechssl.features.extract_features, fp16, all layers), then each probe step reads its batch
with speechssl.features.collate_features and does forward + backward + AdamW step.
Path 2 (on the fly): each step loads the batch's audio from disk (AudioDataset +
collate_audio, as the cache's extraction does), runs the frozen upstream under
torch.inference_mode, stacks its layers and does the same probe step.

The steps/s of each path are medians over repeats (the two paths alternate, so machine
load drifts hit both); their ratio excludes the one-time extraction, which is reported
separately with the break-even step count extraction / (t_step_fly - t_step_cache).

Cells (random-init upstreams at the recipe size; speed does not depend on the weights):
    apc x ks          (3-layer GRU 512; KS: mean-pool + linear, 3200-frame batches)
    mockingjay x pr   (the recipe's transformer; PR: linear CTC, 8000-frame batches)

    python benchmarks/bench_probe_cache.py             # tiny corpus, 3 repeats
    python benchmarks/bench_probe_cache.py --quick     # fewer steps, 2 repeats
    python benchmarks/bench_probe_cache.py --size default --cells apc:ks
    python benchmarks/bench_probe_cache.py --cells mockingjay:pr --upstream-set hidden_size=768 \
        --upstream-set num_heads=12 --upstream-set ff_size=3072   # the paper's width
"""

from __future__ import annotations

import argparse
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
    load_average,
    machine_header,
    median,
    set_overrides,
    table,
)

add_repo_to_path()

from downstream.base import task_from_config  # noqa: E402
from speechssl.data.batching import AudioDataset, LengthBucketSampler, collate_audio  # noqa: E402
from speechssl.data.corpus import load_corpus  # noqa: E402
from speechssl.features import collate_features, extract_features  # noqa: E402
from speechssl.featurizer import Featurizer  # noqa: E402
from speechssl.upstream.load import build_from_config  # noqa: E402


# The probe of speechssl.train (featurizer + task head, trained on the task's loss), restated
# here so this benchmark does not depend on train.py's internals while they change.
class Probe(torch.nn.Module):
    def __init__(self, featurizer: Featurizer, head: torch.nn.Module, task):
        super().__init__()
        self.featurizer, self.head, self.task = featurizer, head, task

    def forward(self, layers, lengths, batch):
        """layers: (L, B, T, D); lengths: (B,) -> the task's scalar loss."""
        return self.task.loss(self.head, self.featurizer(layers), lengths, batch)


def build_cell(cfg, corpus):
    """(task, train items, frozen upstream, downstream config) of the composed config
    ``cfg`` (its upstream and downstream recipes plus the command line's overrides), as
    train.prepare_cell builds them, with a random-init upstream."""
    cfg_down = cfg.downstream
    task = task_from_config(cfg_down)
    train_items = task.splits(corpus)["train"]
    task.setup(train_items)
    torch.manual_seed(0)
    upstream = build_from_config(cfg.upstream).eval()
    task.frame_shift = upstream.downsample_rate / upstream.sample_rate
    task.device = "cpu"
    return task, train_items, upstream, cfg_down


def new_probe(task, cfg_down, num_layers: int, dim: int):
    torch.manual_seed(0)
    model = Probe(Featurizer(num_layers, dim, **cfg_down.featurizer), task.build_probe(dim), task)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg_down.optim.lr,
                            weight_decay=cfg_down.optim.weight_decay)
    return model, model, opt


def probe_step(model, step_loss, opt, layers, lengths, batch, grad_clip) -> float:
    loss = step_loss(layers, lengths, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def run_cached(feats, items, batches, task, cfg_down, n_steps: int) -> float:
    """Seconds per probe step reading cached features (after 2 warm-up steps)."""
    L, _, D = feats[0].shape
    model, step_loss, opt = new_probe(task, cfg_down, L, D)
    model.train()
    clip = cfg_down.optim.grad_clip
    for idx in batches[:2]:
        layers, lengths = collate_features(feats, idx, torch.device("cpu"))
        probe_step(model, step_loss, opt, layers, lengths, {"items": [items[i] for i in idx]}, clip)
    t0 = time.perf_counter()
    for k in range(n_steps):
        idx = batches[k % len(batches)]
        layers, lengths = collate_features(feats, idx, torch.device("cpu"))
        probe_step(model, step_loss, opt, layers, lengths, {"items": [items[i] for i in idx]}, clip)
    return (time.perf_counter() - t0) / n_steps


def run_on_the_fly(upstream, items, batches, task, cfg_down, n_steps: int,
                   num_layers: int, dim: int) -> tuple[float, float, float, float]:
    """Seconds per step (total, audio loading, upstream forward, probe step), on the fly."""
    model, step_loss, opt = new_probe(task, cfg_down, num_layers, dim)
    model.train()
    clip = cfg_down.optim.grad_clip
    dataset = AudioDataset(items, sample_rate=upstream.sample_rate)
    t_load = t_up = t_probe = 0.0
    for k in range(n_steps):
        idx = batches[k % len(batches)]
        t0 = time.perf_counter()
        audio = collate_audio([dataset[i] for i in idx])
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = upstream(audio["audio"], audio["lengths"])
            layers = torch.stack(out.hidden_states, dim=0)  # (L, B, T, D)
        layers, lengths = layers.clone(), out.lengths.clone()  # usable by autograd
        t2 = time.perf_counter()
        probe_step(model, step_loss, opt, layers, lengths, {"items": audio["items"]}, clip)
        t3 = time.perf_counter()
        t_load += t1 - t0
        t_up += t2 - t1
        t_probe += t3 - t2
    n = n_steps
    return (t_load + t_up + t_probe) / n, t_load / n, t_up / n, t_probe / n


def bench_cell(upstream_name, task_name, corpus, args) -> tuple[list, str]:
    cfg = compose_config([*args.common, f"upstream={upstream_name}", f"downstream={task_name}",
                          *args.upstream_overrides])
    task, items, upstream, cfg_down = build_cell(cfg, corpus)
    audio_s = sum(float(it["duration"]) for it in items)
    extract_s, feats = [], None
    for _ in range(args.extract_repeats):
        t0 = time.perf_counter()
        feats = extract_features(upstream, items, torch.device("cpu"),
                                 batch_seconds=cfg_down.optim.extract_batch_seconds,
                                 progress=False)
        extract_s.append(time.perf_counter() - t0)
    L, _, D = feats[0].shape
    sampler = LengthBucketSampler([float(it["duration"]) for it in items],
                                  cfg_down.optim.batch_seconds, shuffle=True, seed=0)
    batches = list(sampler)
    # one warm-up on-the-fly step (first-call allocations), not timed
    run_on_the_fly(upstream, items, batches, task, cfg_down, 1, L, D)
    cached, fly = [], []
    for _ in range(args.repeats):
        cached.append(run_cached(feats, items, batches, task, cfg_down, args.cache_steps))
        fly.append(run_on_the_fly(upstream, items, batches, task, cfg_down, args.fly_steps, L, D))
    t_cache = median(cached)
    t_fly = median([f[0] for f in fly])
    t_load, t_up, t_probe = (median([f[i] for f in fly]) for i in (1, 2, 3))
    t_extract = median(extract_s)
    break_even = t_extract / (t_fly - t_cache) if t_fly > t_cache else float("inf")
    cache_mb = sum(f.numel() * f.element_size() for f in feats) / 2 ** 20
    row = [f"{upstream_name} x {task_name}", f"{L} x {D}", len(items), f"{audio_s:.0f}",
           len(batches), fmt(1 / t_cache), fmt(1 / t_fly), f"**{t_fly / t_cache:.0f}x**",
           f"{t_extract:.1f}", f"{break_even:.1f} ({break_even / len(batches):.2f} ep)",
           f"{cache_mb:.0f}"]
    detail = (f"- {upstream_name} x {task_name}: per on-the-fly step {t_fly * 1000:.0f} ms = "
              f"audio load {t_load * 1000:.0f} + upstream forward {t_up * 1000:.0f} + probe "
              f"{t_probe * 1000:.0f} ms; per cached step {t_cache * 1000:.1f} ms; extraction "
              f"runs {[round(x, 1) for x in extract_s]} s; cached s/step "
              f"{[round(x, 4) for x in cached]}; on-the-fly s/step "
              f"{[round(x[0], 3) for x in fly]}; load {load_average()}")
    print(detail, file=sys.stderr, flush=True)
    return row, detail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="20 cached / 2 on-the-fly steps, 2 repeats, 1 extraction")
    p.add_argument("--size", default="tiny", help="synthesized corpus size (tiny|default|large)")
    p.add_argument("--data-dir", default="/tmp/speechssl-bench-data",
                   help="where the corpus is synthesized (reused when present)")
    p.add_argument("--cells", default="apc:ks,mockingjay:pr",
                   help="comma-separated upstream:task pairs")
    p.add_argument("--cache-steps", type=int, default=None, help="default 100 (--quick: 20)")
    p.add_argument("--fly-steps", type=int, default=None, help="default 5 (--quick: 2)")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 2)")
    p.add_argument("--extract-repeats", type=int, default=None, help="default 3 (--quick: 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--upstream-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an upstream option of every cell, e.g. hidden_size=768 "
                        "(repeatable; a Hydra override of upstream.KEY)")
    args = p.parse_args()
    args.upstream_overrides = set_overrides("upstream", args.upstream_set,
                                            lambda msg: p.error(f"--upstream-set {msg}"))
    fill_sizes(args, cache_steps=(100, 20), fly_steps=(5, 2), repeats=(3, 2),
               extract_repeats=(3, 1))
    torch.set_num_threads(args.threads)
    # the config of run.py (recipes/config.yaml and its groups), composed per cell from these
    args.common = [f"corpus.size={args.size}", f"data_dir={args.data_dir}", "device=cpu",
                   "progress=false"]
    cfg = compose_config([*args.common, *args.upstream_overrides])
    upstream_set = {item.partition("=")[0]: cfg.upstream[item.partition("=")[0]]
                    for item in args.upstream_set}

    print(f"# probe training: cached features vs on-the-fly extraction\n\n{machine_header()}")
    print(f"- command: `{' '.join([sys.executable] + sys.argv)}`")
    t0 = time.perf_counter()
    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=False)
    print(f"- corpus: {corpus.root} (ready in {time.perf_counter() - t0:.1f} s)")
    print(f"- {args.cache_steps} cached / {args.fly_steps} on-the-fly steps per repeat, "
          f"{args.repeats} repeats (alternating), {args.extract_repeats} extraction run(s); "
          f"{args.threads} threads, random-init upstreams at the recipe size"
          f"{' with ' + str(upstream_set) if upstream_set else ''}\n", flush=True)

    rows, details = [], []
    for cell in args.cells.split(","):
        up, task = cell.split(":")
        row, detail = bench_cell(up, task, corpus, args)
        rows.append(row)
        details.append(detail)
    print(table(["cell", "layers x dim", "train items", "train audio s", "batches/epoch",
                 "steps/s cached", "steps/s on the fly", "speed-up",
                 "extraction s (once)", "break-even steps", "cache MB (fp16)"], rows))
    print("\n- speed-up = on-the-fly s/step / cached s/step (medians), extraction excluded; "
          "break-even = extraction / (on-the-fly - cached s/step): after that many steps the "
          "cache has paid for itself (ep = epochs of the train split)")
    print("\n".join(details))
    print(f"- load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
