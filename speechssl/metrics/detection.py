"""Query-by-example spoken term detection (SUPERB QbE, Yang et al. 2021; NIST STD 2006,
QUESST): frame cosine distances, subsequence DTW, and the detection scores TWV, MTWV and
MAP."""

from __future__ import annotations

import numpy as np
import torch


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between every row pair: (..., N, D), (..., M, D) -> (..., N, M)."""
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return 1.0 - a @ b.transpose(-1, -2)


def subsequence_dtw(cost: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Subsequence DTW of a query against documents, vectorized over documents.

    Each of the N query frames is aligned to one document frame; the document index
    advances by 0, 1 or 2 per query frame (the "asymmetric" step pattern), the match may
    start and end anywhere in the document (open begin and end), and the path cost is
    normalized by N: ``min over paths of sum_i cost[i, j_i] / N``.

    Args:
        cost: (B, N, M) frame distances of the query to B documents padded to M frames.
        lengths: (B,) valid document frames (all M when None).

    Returns:
        (B,) normalized distance of the best match in each document.
    """
    B, N, M = cost.shape
    cost = cost.float()
    if lengths is not None:
        pad = torch.arange(M, device=cost.device)[None] >= lengths.to(cost.device)[:, None]
        cost = cost.masked_fill(pad[:, None, :], float("inf"))
    inf = torch.full((B, 2), float("inf"), device=cost.device)
    acc = cost[:, 0]  # (B, M): open begin, any start frame
    for i in range(1, N):
        prev = torch.cat([inf, acc], dim=1)  # prev[:, j + 2] = acc[:, j]
        best = torch.minimum(torch.minimum(prev[:, 2:], prev[:, 1:-1]), prev[:, :-2])
        acc = cost[:, i] + best
    return acc.min(dim=1).values / N  # open end


def _detection_matrix(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be (queries, documents) of the same shape, "
                         f"got {s.shape} and {y.shape}")
    keep = y.any(1)
    if not keep.any():
        raise ValueError("no query occurs in any document; the detection metric is undefined")
    return s[keep], y[keep]  # queries with no occurrence are not scored (NIST STD)


def _twv_gains(y: np.ndarray, beta: float) -> np.ndarray:
    """(Q, D) TWV change when a trial is accepted: +1/(Q n_true) for a hit,
    -beta/(Q n_false) for a false alarm (queries occurring everywhere have no false alarms)."""
    q = y.shape[0]
    n_true = y.sum(1, keepdims=True)
    n_false = y.shape[1] - n_true
    fa = np.divide(beta, n_false, out=np.zeros(n_false.shape), where=n_false > 0)
    return np.where(y, 1.0 / n_true, -fa) / q


def twv(scores, labels, threshold: float, beta: float = 999.9) -> float:
    """Term-weighted value at one global threshold (NIST STD 2006; QUESST):
    ``1 - mean_q [P_miss(q) + beta P_fa(q)]`` over queries with at least one occurrence,
    a (query, document) trial detected when its score >= threshold.

    Args:
        scores: (Q, D) detection scores.
        labels: (Q, D) 1 where the query's term occurs in the document.
    """
    s, y = _detection_matrix(scores, labels)
    return float(_twv_gains(y, beta)[s >= threshold].sum())


def mtwv(scores, labels, beta: float = 999.9) -> float:
    """Maximum term-weighted value over all global thresholds (>= 0: detecting nothing
    scores 0). Shapes as in :func:`twv`."""
    s, y = _detection_matrix(scores, labels)
    flat_s, gains = s.reshape(-1), _twv_gains(y, beta).reshape(-1)
    order = np.argsort(-flat_s, kind="stable")
    cum = np.cumsum(gains[order])
    sorted_s = flat_s[order]
    ends = np.append(sorted_s[1:] != sorted_s[:-1], True)  # last trial of each tied score
    return float(max(0.0, cum[ends].max()))


def mean_average_precision(scores, labels) -> float:
    """Mean over queries (with at least one occurrence) of the average precision of the
    documents ranked by score; tied scores form one step (as scikit-learn).

    Args:
        scores: (Q, D) detection scores.
        labels: (Q, D) 1 where the query's term occurs in the document.
    """
    s, y = _detection_matrix(scores, labels)
    aps = []
    for sq, yq in zip(s, y, strict=True):
        order = np.argsort(-sq, kind="stable")
        sq, yq = sq[order], yq[order]
        ends = np.append(sq[1:] != sq[:-1], True)
        hits = np.cumsum(yq)[ends]
        seen = (np.arange(len(yq)) + 1)[ends]
        recall_steps = np.diff(hits, prepend=0) / hits[-1]
        aps.append(float((recall_steps * hits / seen).sum()))
    return float(np.mean(aps))
