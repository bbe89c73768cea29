"""Correlations x 100 (GLUE STS-B, Wang et al., 2019): Pearson, and Spearman as the Pearson
correlation of average ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from speechssl.metrics.classification import _paired_lists


def pearson(preds: Sequence[float], refs: Sequence[float]) -> float:
    """Pearson correlation x 100 (STS-B); 0 when either side is constant."""
    x, y = (np.asarray(v, dtype=float) for v in _paired_lists(preds, refs))
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if den == 0 else float(100.0 * (x * y).sum() / den)


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    sv = v[order]
    start = 0
    for end in range(1, len(v) + 1):
        if end == len(v) or sv[end] != sv[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(preds: Sequence[float], refs: Sequence[float]) -> float:
    """Spearman rank correlation x 100 (STS-B): Pearson of the average ranks."""
    x, y = (np.asarray(v, dtype=float) for v in _paired_lists(preds, refs))
    return pearson(_average_ranks(x), _average_ranks(y))
