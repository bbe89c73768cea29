"""Speaker diarization (SUPERB SD, Yang et al. 2021): per-recording error frame counts under
the optimal speaker mapping and the diarization error rate (DER)."""

from __future__ import annotations

import numpy as np

from speechssl.metrics.error_rates import _check_pairs


def diarization_errors(ref, hyp) -> dict[str, float]:
    """Frame counts of one recording's diarization errors (0 s collar, overlap scored).

    Reference speakers are mapped one-to-one to hypothesis speakers so that the total
    overlap is largest (Hungarian algorithm), which minimizes the error (NIST md-eval).
    Per frame with ``n_ref`` reference and ``n_hyp`` hypothesis speakers and ``n_ok``
    correctly mapped ones: miss ``max(0, n_ref - n_hyp)``, false alarm
    ``max(0, n_hyp - n_ref)``, confusion ``min(n_ref, n_hyp) - n_ok``.

    Args:
        ref: (T, S_ref) binary speaker activity per frame.
        hyp: (T, S_hyp) binary speaker activity per frame (same frames).

    Returns:
        ``{"miss", "false_alarm", "confusion", "speech"}`` in frames (speech = sum n_ref).
    """
    from scipy.optimize import linear_sum_assignment

    r = np.asarray(ref, dtype=bool)
    h = np.asarray(hyp, dtype=bool)
    if r.ndim != 2 or h.ndim != 2 or r.shape[0] != h.shape[0]:
        raise ValueError(f"ref and hyp must be (T, S) with the same T, got {r.shape} and {h.shape}")
    n_ref, n_hyp = r.sum(1), h.sum(1)
    overlap = r.T.astype(np.int64) @ h.astype(np.int64)  # (S_ref, S_hyp) frames both active
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    n_ok = int(overlap[rows, cols].sum())
    return {"miss": float(np.maximum(n_ref - n_hyp, 0).sum()),
            "false_alarm": float(np.maximum(n_hyp - n_ref, 0).sum()),
            "confusion": float(np.minimum(n_ref, n_hyp).sum() - n_ok),
            "speech": float(n_ref.sum())}


def der(refs, hyps) -> float:
    """Diarization error rate in percent over recordings: (miss + false alarm + confusion)
    / total reference speech, each recording with its own optimal speaker mapping.

    Args:
        refs: R arrays (T_r, S_ref) of reference frame activity.
        hyps: R arrays (T_r, S_hyp) of hypothesis frame activity.
    """
    _check_pairs(refs, hyps)
    tot = {"miss": 0.0, "false_alarm": 0.0, "confusion": 0.0, "speech": 0.0}
    for r, h in zip(refs, hyps, strict=True):
        for k, v in diarization_errors(r, h).items():
            tot[k] += v
    if tot["speech"] == 0:
        raise ValueError("the references contain no speech; the DER is undefined")
    return 100.0 * (tot["miss"] + tot["false_alarm"] + tot["confusion"]) / tot["speech"]
