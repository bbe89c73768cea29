"""The small fine-tuning loop of the text modes that train a bert end to end on one sentence
task outside the probe trainer (mode=early_exit, mode=prompt_finetune): AdamW on random
batches of (token ids, label) pairs for a fixed number of updates, seeded; no dev selection,
no resume (these modes report curves over a few minutes of training, not leaderboard cells)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from speechssl.text.data import pad_ids

Example = tuple[Tensor, int]


def fit(loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor], params: list[nn.Parameter],
        data: list[Example], steps: int, lr: float, batch_size: int, seed: int, pad_id: int,
        device: torch.device) -> list[float]:
    """``steps`` AdamW updates (weight decay 0.01) of ``params`` on ``loss_fn(ids, lengths,
    labels)`` over batches drawn without replacement from ``data`` by a generator seeded with
    ``seed``; returns the losses."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        pick = rng.choice(len(data), size=min(batch_size, len(data)), replace=False)
        ids, lengths = pad_ids([data[i][0] for i in pick], pad_id)
        y = torch.tensor([data[i][1] for i in pick], device=device)
        loss = loss_fn(ids.to(device), lengths.to(device), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def balanced_subset(items: list[dict], n: int, seed: int, key: str = "label") -> list[dict]:
    """``n`` items with the labels as balanced as ``n`` allows, drawn with ``seed`` (LM-BFF's
    K examples per class)."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_label.setdefault(str(it[key]), []).append(i)
    labels = sorted(by_label)
    pools = {lab: list(rng.permutation(by_label[lab])) for lab in labels}
    picks: list[int] = []
    while len(picks) < min(n, len(items)):
        for lab in labels:
            if pools[lab] and len(picks) < n:
                picks.append(int(pools[lab].pop()))
    return [items[i] for i in sorted(picks)]


def evenly_spaced(items: list, n: int) -> list:
    """``n`` > 0 items evenly spaced over ``items`` (all when n is 0 or covers them)."""
    if 0 < n < len(items):
        return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]
    return items


def sentence_task(cfg, mode: str, test_items: int = 0):
    """What the text modes start from: the task (a sentence classification task: items with
    ``text`` and ``label``, else a ConfigError naming ``mode``), the corpus, its splits (test
    cut to ``test_items`` evenly spaced), the frozen upstream with its info, and the device."""
    from downstream.base import task_from_config
    from speechssl.data.corpus import load_corpus
    from speechssl.errors import ConfigError
    from speechssl.runtime import resolve_device
    from speechssl.upstream.load import load_upstream

    device = resolve_device(cfg.device)
    task = task_from_config(cfg.downstream)
    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
    splits = task.splits(corpus)
    if not all("text" in it and "label" in it for it in splits["train"][:1]):
        raise ConfigError(f"mode={mode} needs a sentence classification task (text, label), "
                          f"not downstream={task.name}")
    splits["test"] = evenly_spaced(splits["test"], test_items)
    model, info = load_upstream(cfg, corpus, device)
    return task, corpus, splits, model, info, device


def write_result(cfg, mode: str, tag: str, task: str, result: dict):
    """``result`` as JSON in ``<out_dir>/<mode>/<upstream tag>-<task>.json`` (atomically)."""
    import json
    from pathlib import Path

    from speechssl.atomic import atomic_write_text

    out = Path(cfg.out_dir) / mode / f"{tag}-{task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1))
    return out
