"""Leaderboard plots as PNG bytes (matplotlib, Agg): learned layer weights (the SUPERB
featurizer's softmax weights, Yang et al., 2021), training/dev curves, SUPERB score bars."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 80


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def layer_weights_png(labels: list[str], weights: list[list[float]], title: str) -> bytes:
    """Heat map of layer weights: one row per label (upstream x task), one column per
    layer; rows of fewer layers are padded blank. weights: list (R) of lists (L_r)."""
    if len(labels) != len(weights) or not labels:
        raise ValueError("layer_weights_png needs one weight list per label (and at least one)")
    width = max(len(w) for w in weights)
    grid = [[*w, *([math.nan] * (width - len(w)))] for w in weights]
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * width, 0.9 + 0.35 * len(labels)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0,
                   vmax=max(max(w) for w in weights))
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xticks(range(width), [str(i) for i in range(width)])
    ax.set_xlabel("layer (0 = input features)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="softmax weight")
    return _png(fig)


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points
    are not pulled towards zero (weight 0 returns the values)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1.0 - weight) * v
        out.append(avg / (1.0 - weight ** i))
    return out


def _train_loss(ax, steps: list[int], values: list[float], label: str | None = None) -> None:
    """Per-step losses are noisy: the raw line faint, and smoothed over about a fortieth of
    the run on top (no smoothing for runs of 40 logged steps or fewer)."""
    (raw,) = ax.plot(steps, values, lw=0.6, alpha=0.3)
    ax.plot(steps, smooth(values, max(0.0, 1.0 - 40.0 / max(len(values), 1))), lw=1.2,
            color=raw.get_color(), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (smoothed)")


def curves_png(train: tuple[list[int], list[float]], dev: dict[str, tuple[list[int], list[float]]],
               title: str) -> bytes:
    """Training loss (left) and dev metrics (right) against the step, for one run."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8))
    _train_loss(a, *train)
    for name, (steps, values) in sorted(dev.items()):
        b.plot(steps, values, marker="o", ms=3, label=name)
    b.set_xlabel("step")
    b.set_ylabel("dev")
    if dev:
        b.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def runs_curves_png(runs: dict[str, dict], metric: str, title: str) -> bytes:
    """Train loss (left) and one dev metric (right) against the step, one line per run.
    runs: label -> {"train": (steps, values), "dev": (steps, values)}."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8))
    for label, series in runs.items():
        _train_loss(a, *series["train"], label=label)
        b.plot(*series["dev"], marker="o", ms=3, label=label)
    b.set_xlabel("step")
    b.set_ylabel(f"dev {metric}")
    for ax in (a, b):
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def pretrain_curves_png(train: tuple[list[int], list[float]], curve: list[dict],
                        title: str) -> bytes:
    """A pre-training run's learning curve: the training loss (left), the pretext dev loss
    (middle), and its dev accuracies with the phone PNMI of the best layer's units (right,
    on [0, 1]). ``curve``: points {"step", "dev_loss", "dev_<metric>", "phone_pnmi", ...}."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(11, 2.8))
    _train_loss(a, *train)
    steps = [p["step"] for p in curve]
    b.plot(steps, [p.get("dev_loss", float("nan")) for p in curve], marker="o", ms=3)
    b.set_xlabel("step")
    b.set_ylabel("dev pretext loss")
    keys = sorted({k for p in curve for k in p if "accuracy" in k or k == "phone_pnmi"})
    for key in keys:
        c.plot(steps, [p.get(key, float("nan")) for p in curve], marker="o", ms=3,
               label=key.removeprefix("dev_"))
    c.set_ylim(0, 1)
    c.set_xlabel("step")
    c.set_ylabel("dev")
    if keys:
        c.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def score_bars_png(scores: dict[str, float], title: str) -> bytes:
    """Bar chart of the SUPERB score per upstream (0 = fbank baseline, 1000 = topline)."""
    if not scores:
        raise ValueError("score_bars_png needs at least one score")
    names = sorted(scores, key=lambda u: scores[u])
    fig, ax = plt.subplots(figsize=(5, 0.8 + 0.35 * len(names)))
    ax.barh(names, [scores[u] for u in names], color="tab:blue")
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(1000, color="k", lw=0.8, ls="--")
    ax.set_xlabel("SUPERB score (0 = baseline, 1000 = topline)")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def read_tb_scalars(tb_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """All scalar series of a TensorBoard log dir: tag -> (steps, values); {} if none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    quiet = logging.getLogger("tensorboard")  # "No path found after ..." at INFO per file
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        acc.Reload()
    finally:
        quiet.setLevel(level)
    out = {}
    for tag in acc.Tags().get("scalars", []):
        last: dict[int, float] = {}
        for e in acc.Scalars(tag):  # a resumed run may log a step twice: keep the latest
            last[int(e.step)] = float(e.value)
        steps = sorted(last)
        out[tag] = (steps, [last[s] for s in steps])
    return out
