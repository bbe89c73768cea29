"""Speaker verification (SUPERB ASV, Yang et al. 2021): the equal error rate and the minimum
normalized detection cost of scored trials."""

from __future__ import annotations

import numpy as np


def _binary_trials(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N,) float and labels (N,) in {0, 1}; both classes must occur."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"got {s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("trial labels must be 0 (non-target) or 1 (target)")
    y = y.astype(np.int64)
    if y.min(initial=1) == 1 or y.max(initial=0) == 0:
        raise ValueError("need both target (1) and non-target (0) trials")
    return s, y


def eer(scores, labels) -> float:
    """Equal error rate in percent of verification trials (higher score = more likely target).

    The ROC (``sklearn.metrics.roc_curve``) is linearly interpolated between operating
    points and the EER is read where the false-alarm rate equals the miss rate.

    Args:
        scores: (N,) trial scores.
        labels: (N,) 1 for target (same speaker) trials, 0 for non-target trials.
    """
    from sklearn.metrics import roc_curve

    s, y = _binary_trials(scores, labels)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 (reject all) to -1 (accept all)
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return 100.0 * float(fpr[0])
    d0, d1 = diff[i - 1], diff[i]
    a = d0 / (d0 - d1)
    return 100.0 * float(fpr[i - 1] + a * (fpr[i] - fpr[i - 1]))


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0,
            c_fa: float = 1.0) -> float:
    """Minimum normalized detection cost over all thresholds (NIST SRE / VoxCeleb; SUPERB
    uses p_target 0.01, C_miss = C_fa = 1).

    ``DCF(t) = C_miss P_miss(t) p_target + C_fa P_fa(t) (1 - p_target)``, divided by the
    cost of the best trivial system ``min(C_miss p_target, C_fa (1 - p_target))``.

    Args:
        scores: (N,) trial scores; a trial is accepted when its score >= the threshold.
        labels: (N,) 1 target, 0 non-target.
    """
    from sklearn.metrics import roc_curve

    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    s, y = _binary_trials(scores, labels)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # includes 'reject all'
    fpr, tpr = np.append(fpr, 1.0), np.append(tpr, 1.0)  # and 'accept all'
    dcf = c_miss * (1.0 - tpr) * p_target + c_fa * fpr * (1.0 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))
