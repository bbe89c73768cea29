"""Classification scores in percent: accuracy (SUPERB KS, SID, ER, IC; text tasks), the
Matthews correlation (GLUE CoLA) and the F1 of a positive class (GLUE MRPC, QQP; Wang et al.,
2019)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _paired_lists(preds, refs, empty: str = "a score of an empty set is undefined"
                  ) -> tuple[list, list]:
    """Predictions and references as two lists of one length B > 0 (tensors and arrays
    converted with ``.tolist()``); ``empty`` is the error when B = 0."""
    preds = preds.tolist() if hasattr(preds, "tolist") else list(preds)
    refs = refs.tolist() if hasattr(refs, "tolist") else list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    if not refs:
        raise ValueError(empty)
    return preds, refs


def accuracy(preds: Sequence[Hashable], refs: Sequence[Hashable]) -> float:
    """Percentage of positions where ``preds[i] == refs[i]``; both of length B > 0.

    Tensors and arrays are accepted (converted with ``.tolist()``).
    """
    preds, refs = _paired_lists(preds, refs, empty="accuracy of an empty set is undefined")
    return 100.0 * sum(p == r for p, r in zip(preds, refs, strict=True)) / len(refs)


def matthews_corrcoef(preds: Sequence[Hashable], refs: Sequence[Hashable]) -> float:
    """Matthews correlation (CoLA) x 100, for any number of classes (Gorodkin's R_K, which
    is the binary MCC for two classes); 0 when it is undefined (one class only)."""
    preds, refs = _paired_lists(preds, refs)
    labels = sorted(set(refs) | set(preds), key=str)
    index = {c: i for i, c in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)))
    for p, r in zip(preds, refs, strict=True):
        conf[index[r], index[p]] += 1
    t, p = conf.sum(1), conf.sum(0)  # true and predicted counts per class
    n, correct = conf.sum(), np.trace(conf)
    den = np.sqrt((n * n - (p * p).sum()) * (n * n - (t * t).sum()))
    return 0.0 if den == 0 else float(100.0 * (correct * n - (t * p).sum()) / den)


def binary_f1(preds: Sequence[Hashable], refs: Sequence[Hashable], positive: Hashable = "1") -> float:
    """F1 of the ``positive`` class x 100 (MRPC, QQP); 0 when nothing is positive."""
    preds, refs = _paired_lists(preds, refs)
    tp = sum(p == positive and r == positive for p, r in zip(preds, refs, strict=True))
    fp = sum(p == positive and r != positive for p, r in zip(preds, refs, strict=True))
    fn = sum(p != positive and r == positive for p, r in zip(preds, refs, strict=True))
    return 0.0 if tp == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)
