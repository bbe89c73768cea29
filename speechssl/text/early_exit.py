"""Early exit for BERT (DeeBERT: Xin, Tang, Lee, Yu and Lin, 2020, "DeeBERT: Dynamic Early
Exiting for Accelerating BERT Inference"): an off-ramp (pooler + linear classifier on the
[CLS] state) after every encoder layer; at inference the layers run one at a time and the
sentence leaves at the first off-ramp whose confidence (its largest class probability) reaches
a threshold, or at the last layer.

Training, DeeBERT's two stages: (1) the upstream and the last off-ramp are fine-tuned on the
task's cross-entropy; (2) the upstream and the last off-ramp are frozen and the other
off-ramps are trained together on the sum of their cross-entropies, so the last layer's
accuracy is exactly that of stage 1. ``mode=early_exit`` reports, over a grid of
thresholds, the test accuracy against the average number of layers run and the wall time
saved against running every layer.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask
from speechssl.text.finetune import fit


class OffRamps(nn.Module):
    """One (pooler: Linear + tanh, classifier: Linear) pair per encoder layer."""

    def __init__(self, num_layers: int, hidden: int, num_classes: int):
        super().__init__()
        self.ramps = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(),
                                                 nn.Linear(hidden, num_classes))
                                   for _ in range(num_layers))

    def forward(self, layer: int, cls_state: Tensor) -> Tensor:
        """(B, H) [CLS] state after encoder layer ``layer`` (0-based) -> (B, C) logits."""
        return self.ramps[layer](cls_state)


class EarlyExitBERT(nn.Module):
    """A BERT upstream (``_layers``-style: ``embed``, ``encoder.layers``) with off-ramps."""

    def __init__(self, bert, num_classes: int):
        super().__init__()
        self.bert = bert
        self.num_layers = len(bert.encoder.layers)
        hidden = bert.embed.tokens.embedding_dim
        self.ramps = OffRamps(self.num_layers, hidden, num_classes)

    def layer_states(self, ids: Tensor, lengths: Tensor) -> list[Tensor]:
        """[CLS] states (B, H) after each encoder layer."""
        return [h[:, 0] for h in self.bert(ids, lengths).hidden_states[1:]]

    def all_logits(self, ids: Tensor, lengths: Tensor) -> list[Tensor]:
        return [self.ramps(i, h) for i, h in enumerate(self.layer_states(ids, lengths))]

    @torch.no_grad()
    def exit_predict(self, ids: Tensor, lengths: Tensor, threshold: float) -> tuple[int, int]:
        """One sentence (1, T): run layers one by one, leave at the first off-ramp whose top
        probability is >= ``threshold`` (or at the last). Returns (class, layers run)."""
        from speechssl.upstream.bert import segment_ids

        bert = self.bert
        pad = ~valid_mask(lengths, ids.shape[1])
        h = bert.embed(ids, segment_ids(ids, bert.special_ids()["sep"]))
        for i, layer in enumerate(bert.encoder.layers):
            h = layer(h, pad)
            probs = F.softmax(self.ramps(i, h[:, 0]).float(), -1)[0]
            if float(probs.max()) >= threshold or i == self.num_layers - 1:
                return int(probs.argmax()), i + 1
        raise AssertionError("unreachable")


def stage_parameters(model: EarlyExitBERT, stage: int) -> list[nn.Parameter]:
    """Stage 1: the upstream and the last off-ramp; stage 2: the other off-ramps. Every other
    parameter gets requires_grad False."""
    last = model.ramps.ramps[-1]
    train = [*model.bert.parameters(), *last.parameters()] if stage == 1 else \
        [p for r in model.ramps.ramps[:-1] for p in r.parameters()]
    keep = {id(p) for p in train}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return train


def train_stage(model: EarlyExitBERT, stage: int, data: list[tuple[Tensor, int]], steps: int,
                lr: float, batch_size: int, seed: int, pad_id: int) -> list[float]:
    """One of DeeBERT's stages (:func:`stage_parameters`) for ``steps`` updates; returns the
    losses. Stage 2 runs the frozen upstream in eval mode (no dropout, as at inference)."""
    params = stage_parameters(model, stage)
    model.train()
    if stage == 2:
        model.bert.eval()

    def loss_fn(ids: Tensor, lengths: Tensor, y: Tensor) -> Tensor:
        logits = model.all_logits(ids, lengths)
        if stage == 1:
            return F.cross_entropy(logits[-1], y)
        return sum(F.cross_entropy(lg, y) for lg in logits[:-1])

    losses = fit(loss_fn, params, data, steps, lr, batch_size, seed * 2 + stage, pad_id,
                 next(model.parameters()).device)
    model.eval()
    return losses


def exit_curve(model: EarlyExitBERT, data: list[tuple[Tensor, int]], thresholds: list[float]
               ) -> list[dict]:
    """Per threshold: accuracy (%), average layers run, wall seconds (one sentence at a
    time), and the time saved against running every layer (threshold above 1)."""
    rows, device = [], next(model.parameters()).device
    for t in [*thresholds, 1.01]:
        start, hits, layers = time.perf_counter(), 0, 0
        for ids, label in data:
            pred, used = model.exit_predict(ids[None].to(device),
                                            torch.tensor([len(ids)], device=device), t)
            hits += pred == label
            layers += used
        rows.append({"threshold": t, "accuracy": 100.0 * hits / len(data),
                     "avg_layers": layers / len(data), "seconds": time.perf_counter() - start})
    full = rows.pop()
    for r in rows:
        r["time_saved"] = 1.0 - r["seconds"] / full["seconds"]
    return [*rows, {**full, "threshold": "all layers", "time_saved": 0.0}]


def run_early_exit(cfg) -> dict:
    """``mode=early_exit``: the two training stages on the task's train split, then the
    threshold curve on its test split; printed and written to
    ``<out_dir>/early_exit/<upstream tag>-<task>.json``."""
    from speechssl.text.finetune import sentence_task, write_result

    ec = cfg.early_exit
    task, corpus, splits, bert, info, device = sentence_task(cfg, "early_exit",
                                                             int(ec.test_items or 0))
    if not hasattr(bert, "pair_head"):
        raise ConfigError(f"mode=early_exit needs upstream=bert, not {cfg.upstream.name}")
    labels = sorted({str(it["label"]) for it in splits["train"]})
    index = {c: i for i, c in enumerate(labels)}

    def encode(items: list[dict]) -> list[tuple[Tensor, int]]:
        return [(torch.tensor(bert.encode_ids(it)), index[str(it["label"])]) for it in items]

    torch.manual_seed(cfg.seed)
    model = EarlyExitBERT(bert, len(labels)).to(device)
    train, test = encode(splits["train"]), encode(splits["test"])
    t0 = time.time()
    s1 = train_stage(model, 1, train, int(ec.steps), float(ec.lr), int(ec.batch_size), cfg.seed,
                     bert.pad_id)
    s2 = train_stage(model, 2, train, int(ec.steps), float(ec.ramp_lr), int(ec.batch_size),
                     cfg.seed, bert.pad_id)
    curve = exit_curve(model, test, [float(t) for t in ec.thresholds])
    result = {"upstream": cfg.upstream.name, "weights_hash": info.weights_hash, "task": task.name,
              "corpus": corpus.key, "test_items": len(test), "layers": model.num_layers,
              "stage_losses": [float(np.mean(s1[-20:])), float(np.mean(s2[-20:]))],
              "train_seconds": round(time.time() - t0, 1), "curve": curve}
    print(f"[early_exit] {cfg.upstream.name} on {task.name}: {len(test)} test items, "
          f"{model.num_layers} layers")
    print("| threshold | accuracy | avg layers | time saved |")
    print("|---|---|---|---|")
    for r in curve:
        print(f"| {r['threshold']} | {r['accuracy']:.2f} | {r['avg_layers']:.2f} | "
              f"{100 * r['time_saved']:.0f} % |")
    out = write_result(cfg, "early_exit", info.tag(cfg.upstream.name), task.name, result)
    print(f"[early_exit] written {out}")
    return result
