"""Evaluation metrics: edit-distance error rates (WER/CER/PER) and accuracy, in percent."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

__all__ = [
    "accuracy",
    "cer",
    "edit_distance",
    "edit_ops",
    "error_rate",
    "per",
    "wer",
]


def _strip_affix(ref: Sequence, hyp: Sequence) -> tuple[list, list, int]:
    """Remove the common prefix and suffix; return the cores and the number of tokens removed."""
    n, m = len(ref), len(hyp)
    start = 0
    while start < n and start < m and ref[start] == hyp[start]:
        start += 1
    end = 0
    while end < n - start and end < m - start and ref[n - 1 - end] == hyp[m - 1 - end]:
        end += 1
    return list(ref[start : n - end]), list(hyp[start : m - end]), start + end


def _dp_rows(ref: list, hyp: list):
    """Rows of the Levenshtein matrix, ``row_i[j]`` = distance(ref[:i], hyp[:j]), i = 0..len(ref)."""
    m = len(hyp)
    prev = list(range(m + 1))
    yield prev
    for i, r in enumerate(ref, start=1):
        cur = [i] * (m + 1)
        left = i
        for j in range(1, m + 1):
            diag = prev[j - 1] if r == hyp[j - 1] else prev[j - 1] + 1
            up = prev[j] + 1
            left = left + 1
            if up < left:
                left = up
            if diag < left:
                left = diag
            cur[j] = left
        yield cur
        prev = cur


def _dp_matrix(ref: list, hyp: list) -> list[list[int]]:
    """Full Levenshtein matrix, size (len(ref)+1, len(hyp)+1)."""
    return list(_dp_rows(ref, hyp))


def edit_ops(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[int, int, int, int]:
    """Count the operations of a minimum-edit alignment of ``hyp`` against ``ref``.

    Ties between equally cheap alignments are broken like jiwer (rapidfuzz): the common
    prefix and suffix are matched first, then the alignment is traced back from the end
    preferring a deletion, then an insertion, then a match/substitution.

    Args:
        ref: reference tokens, length N.
        hyp: hypothesis tokens, length M.

    Returns:
        ``(hits, substitutions, deletions, insertions)`` with ``hits + S + D == N`` and
        ``hits + S + I == M``.
    """
    r, h, n_affix = _strip_affix(ref, hyp)
    d = _dp_matrix(r, h)
    i, j = len(r), len(h)
    subs = dels = ins = 0
    while i and j:
        if d[i][j] == d[i - 1][j] + 1:
            dels += 1
            i -= 1
        elif j > 1 and d[i][j - 1] == d[i - 1][j - 1] - 1:
            ins += 1
            j -= 1
        else:
            if r[i - 1] != h[j - 1]:
                subs += 1
            i -= 1
            j -= 1
    dels += i
    ins += j
    hits = len(r) - subs - dels + n_affix
    return hits, subs, dels, ins


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit costs) between token sequences ``ref`` (N,) and ``hyp`` (M,)."""
    r, h, _ = _strip_affix(ref, hyp)
    if len(r) < len(h):
        r, h = h, r
    if not h:
        return len(r)
    last_row = deque(_dp_rows(r, h), maxlen=1)[0]  # O(min(N, M)) memory
    return last_row[-1]


def _check_pairs(refs: Sequence, hyps: Sequence) -> None:
    """Raise if ``refs``/``hyps`` are bare strings or differ in length."""
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("refs and hyps must be lists of utterances, not a single string")
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")


def error_rate(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> float:
    """Corpus error rate in percent: ``100 * sum(edit_distance) / sum(len(ref))``.

    Args:
        refs: B reference token sequences.
        hyps: B hypothesis token sequences.

    Raises:
        ValueError: if the lists differ in length or all references are empty.
    """
    _check_pairs(refs, hyps)
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("total reference length is 0; the error rate is undefined")
    edits = sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True))
    return 100.0 * edits / total


def _words(text: str) -> list[str]:
    """Whitespace-separated tokens of ``text``."""
    return text.split()


def _chars(text: str) -> list[str]:
    """Characters of ``text`` (inner spaces kept, outer whitespace stripped, like jiwer.cer)."""
    return list(text.strip())


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate in percent over B utterances (words split on whitespace)."""
    _check_pairs(refs, hyps)
    return error_rate([_words(t) for t in refs], [_words(t) for t in hyps])


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate in percent over B utterances (spaces count as characters)."""
    _check_pairs(refs, hyps)
    return error_rate([_chars(t) for t in refs], [_chars(t) for t in hyps])


def per(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Phone error rate in percent; each string holds space-separated phone symbols."""
    _check_pairs(refs, hyps)
    return error_rate([_words(t) for t in refs], [_words(t) for t in hyps])


def accuracy(preds: Sequence[Hashable], refs: Sequence[Hashable]) -> float:
    """Percentage of positions where ``preds[i] == refs[i]``; both of length B > 0.

    Tensors and arrays are accepted (converted with ``.tolist()``).
    """
    preds = preds.tolist() if hasattr(preds, "tolist") else list(preds)
    refs = refs.tolist() if hasattr(refs, "tolist") else list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    if not refs:
        raise ValueError("accuracy of an empty set is undefined")
    return 100.0 * sum(p == r for p, r in zip(preds, refs, strict=True)) / len(refs)


# --- slot filling (SUPERB SF; definitions of s3prl downstream/ctc/metric.py) ---------------

Slots = Sequence[tuple[str, str]]  # one utterance: (slot type, slot value) pairs, in order


def _check_slot_pairs(refs: Sequence[Slots], hyps: Sequence[Slots]) -> None:
    """Raise if the lists differ in length or are empty."""
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("a slot metric of an empty set is undefined")


def _type_f1(ref_types: set, hyp_types: set) -> float:
    """F1 (0..1) between the slot-type sets of one utterance; both empty counts as 1."""
    if not ref_types and not hyp_types:
        return 1.0
    hits = len(ref_types & hyp_types)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(hyp_types), hits / len(ref_types)
    return 2 * precision * recall / (precision + recall)


def slot_type_f1(refs: Sequence[Slots], hyps: Sequence[Slots]) -> float:
    """Slot-type F1 in percent (SUPERB SF headline): per utterance, the F1 between the
    *sets* of slot types in reference and hypothesis (values ignored; an utterance with no
    slots on either side scores 1), averaged over the B utterances."""
    _check_slot_pairs(refs, hyps)
    scores = [_type_f1({t for t, _ in r}, {t for t, _ in h}) for r, h in zip(refs, hyps, strict=True)]
    return 100.0 * sum(scores) / len(scores)


def slot_value_pairs(refs: Sequence[Slots], hyps: Sequence[Slots]) -> tuple[list[str], list[str]]:
    """Pair every reference slot value with a hypothesis value of the same type: the one
    with the lowest CER against it (the first on ties), or "" when the hypothesis has no slot
    of that type. Returns (reference values, hypothesis values), one entry per reference slot."""
    _check_slot_pairs(refs, hyps)
    ref_values, hyp_values = [], []
    for ref, hyp in zip(refs, hyps, strict=True):
        for typ, value in ref:
            candidates = [v for t, v in hyp if t == typ]
            best = min(candidates, key=lambda v: edit_distance(list(value), list(v)), default="")
            ref_values.append(value)
            hyp_values.append(best)
    return ref_values, hyp_values


def slot_value_cer(refs: Sequence[Slots], hyps: Sequence[Slots]) -> float:
    """Slot-value CER in percent (SUPERB SF): corpus CER over the reference slot values,
    each against its best same-type hypothesis value (see ``slot_value_pairs``); a missed
    slot type counts every character of the reference value as deleted."""
    ref_values, hyp_values = slot_value_pairs(refs, hyps)
    if not ref_values:
        raise ValueError("the references hold no slots; the slot-value CER is undefined")
    return error_rate([list(v) for v in ref_values], [list(v) for v in hyp_values])


__all__ += ["slot_type_f1", "slot_value_cer", "slot_value_pairs"]


# --- Scoring of ASV, SD and QbE (SUPERB, Yang et al. 2021): EER/minDCF, DER, DTW, MTWV/MAP ---

import numpy as _np  # noqa: E402
import torch as _torch  # noqa: E402

__all__ += [
    "cosine_distance",
    "diarization_errors",
    "der",
    "eer",
    "min_dcf",
    "mean_average_precision",
    "mtwv",
    "subsequence_dtw",
    "twv",
]


def _binary_trials(scores, labels) -> tuple[_np.ndarray, _np.ndarray]:
    """Scores (N,) float and labels (N,) in {0, 1}; both classes must occur."""
    s = _np.asarray(scores, dtype=_np.float64).reshape(-1)
    y = _np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"got {s.size} scores but {y.size} labels")
    if not _np.isin(y, (0, 1)).all():
        raise ValueError("trial labels must be 0 (non-target) or 1 (target)")
    y = y.astype(_np.int64)
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
    i = int(_np.argmax(diff <= 0))
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
    fpr, tpr = _np.append(fpr, 1.0), _np.append(tpr, 1.0)  # and 'accept all'
    dcf = c_miss * (1.0 - tpr) * p_target + c_fa * fpr * (1.0 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


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

    r = _np.asarray(ref, dtype=bool)
    h = _np.asarray(hyp, dtype=bool)
    if r.ndim != 2 or h.ndim != 2 or r.shape[0] != h.shape[0]:
        raise ValueError(f"ref and hyp must be (T, S) with the same T, got {r.shape} and {h.shape}")
    n_ref, n_hyp = r.sum(1), h.sum(1)
    overlap = r.T.astype(_np.int64) @ h.astype(_np.int64)  # (S_ref, S_hyp) frames both active
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    n_ok = int(overlap[rows, cols].sum())
    return {"miss": float(_np.maximum(n_ref - n_hyp, 0).sum()),
            "false_alarm": float(_np.maximum(n_hyp - n_ref, 0).sum()),
            "confusion": float(_np.minimum(n_ref, n_hyp).sum() - n_ok),
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


def cosine_distance(a: _torch.Tensor, b: _torch.Tensor) -> _torch.Tensor:
    """``1 - cos`` between every row pair: (..., N, D), (..., M, D) -> (..., N, M)."""
    a = _torch.nn.functional.normalize(a.float(), dim=-1)
    b = _torch.nn.functional.normalize(b.float(), dim=-1)
    return 1.0 - a @ b.transpose(-1, -2)


def subsequence_dtw(cost: _torch.Tensor, lengths: _torch.Tensor | None = None) -> _torch.Tensor:
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
        pad = _torch.arange(M, device=cost.device)[None] >= lengths.to(cost.device)[:, None]
        cost = cost.masked_fill(pad[:, None, :], float("inf"))
    inf = _torch.full((B, 2), float("inf"), device=cost.device)
    acc = cost[:, 0]  # (B, M): open begin, any start frame
    for i in range(1, N):
        prev = _torch.cat([inf, acc], dim=1)  # prev[:, j + 2] = acc[:, j]
        best = _torch.minimum(_torch.minimum(prev[:, 2:], prev[:, 1:-1]), prev[:, :-2])
        acc = cost[:, i] + best
    return acc.min(dim=1).values / N  # open end


def _detection_matrix(scores, labels) -> tuple[_np.ndarray, _np.ndarray]:
    s = _np.asarray(scores, dtype=_np.float64)
    y = _np.asarray(labels).astype(bool)
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be (queries, documents) of the same shape, "
                         f"got {s.shape} and {y.shape}")
    keep = y.any(1)
    if not keep.any():
        raise ValueError("no query occurs in any document; the detection metric is undefined")
    return s[keep], y[keep]  # queries with no occurrence are not scored (NIST STD)


def _twv_gains(y: _np.ndarray, beta: float) -> _np.ndarray:
    """(Q, D) TWV change when a trial is accepted: +1/(Q n_true) for a hit,
    -beta/(Q n_false) for a false alarm (queries occurring everywhere have no false alarms)."""
    q = y.shape[0]
    n_true = y.sum(1, keepdims=True)
    n_false = y.shape[1] - n_true
    fa = _np.divide(beta, n_false, out=_np.zeros(n_false.shape), where=n_false > 0)
    return _np.where(y, 1.0 / n_true, -fa) / q


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
    order = _np.argsort(-flat_s, kind="stable")
    cum = _np.cumsum(gains[order])
    sorted_s = flat_s[order]
    ends = _np.append(sorted_s[1:] != sorted_s[:-1], True)  # last trial of each tied score
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
        order = _np.argsort(-sq, kind="stable")
        sq, yq = sq[order], yq[order]
        ends = _np.append(sq[1:] != sq[:-1], True)
        hits = _np.cumsum(yq)[ends]
        seen = (_np.arange(len(yq)) + 1)[ends]
        recall_steps = _np.diff(hits, prepend=0) / hits[-1]
        aps.append(float((recall_steps * hits / seen).sum()))
    return float(_np.mean(aps))


# --- text tasks: GLUE (Wang et al., 2019) and SQuAD v1.1 (Rajpurkar et al., 2016) ---------
# Like every score above, in percent (x100, as the GLUE and SQuAD leaderboards print them).

def _paired_lists(preds, refs) -> tuple[list, list]:
    preds = preds.tolist() if hasattr(preds, "tolist") else list(preds)
    refs = refs.tolist() if hasattr(refs, "tolist") else list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    if not refs:
        raise ValueError("a score of an empty set is undefined")
    return preds, refs


def matthews_corrcoef(preds: Sequence[Hashable], refs: Sequence[Hashable]) -> float:
    """Matthews correlation (CoLA) x 100, for any number of classes (Gorodkin's R_K, which
    is the binary MCC for two classes); 0 when it is undefined (one class only)."""
    preds, refs = _paired_lists(preds, refs)
    labels = sorted(set(refs) | set(preds), key=str)
    index = {c: i for i, c in enumerate(labels)}
    conf = _np.zeros((len(labels), len(labels)))
    for p, r in zip(preds, refs, strict=True):
        conf[index[r], index[p]] += 1
    t, p = conf.sum(1), conf.sum(0)  # true and predicted counts per class
    n, correct = conf.sum(), _np.trace(conf)
    den = _np.sqrt((n * n - (p * p).sum()) * (n * n - (t * t).sum()))
    return 0.0 if den == 0 else float(100.0 * (correct * n - (t * p).sum()) / den)


def binary_f1(preds: Sequence[Hashable], refs: Sequence[Hashable], positive: Hashable = "1") -> float:
    """F1 of the ``positive`` class x 100 (MRPC, QQP); 0 when nothing is positive."""
    preds, refs = _paired_lists(preds, refs)
    tp = sum(p == positive and r == positive for p, r in zip(preds, refs, strict=True))
    fp = sum(p == positive and r != positive for p, r in zip(preds, refs, strict=True))
    fn = sum(p != positive and r == positive for p, r in zip(preds, refs, strict=True))
    return 0.0 if tp == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)


def pearson(preds: Sequence[float], refs: Sequence[float]) -> float:
    """Pearson correlation x 100 (STS-B); 0 when either side is constant."""
    x, y = (_np.asarray(v, dtype=float) for v in _paired_lists(preds, refs))
    x, y = x - x.mean(), y - y.mean()
    den = _np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if den == 0 else float(100.0 * (x * y).sum() / den)


def _average_ranks(v: _np.ndarray) -> _np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = _np.argsort(v, kind="stable")
    ranks = _np.empty(len(v))
    sv = v[order]
    start = 0
    for end in range(1, len(v) + 1):
        if end == len(v) or sv[end] != sv[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(preds: Sequence[float], refs: Sequence[float]) -> float:
    """Spearman rank correlation x 100 (STS-B): Pearson of the average ranks."""
    x, y = (_np.asarray(v, dtype=float) for v in _paired_lists(preds, refs))
    return pearson(_average_ranks(x), _average_ranks(y))


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's answer normalization: lower case, drop punctuation, drop the articles
    a/an/the, collapse whitespace."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _squad_f1(pred: str, truth: str) -> float:
    from collections import Counter

    p, t = squad_normalize(pred).split(), squad_normalize(truth).split()
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def squad_scores(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} x 100 of SQuAD v1.1: per question, the best over its reference
    answers of exact match / token F1 of the normalized strings; mean over questions."""
    preds, refs = _paired_lists(preds, refs)
    em = f1 = 0.0
    for p, answers in zip(preds, refs, strict=True):
        if isinstance(answers, str) or not answers:
            raise ValueError(f"references must be non-empty lists of answers, got {answers!r}")
        em += max(float(squad_normalize(p) == squad_normalize(a)) for a in answers)
        f1 += max(_squad_f1(p, a) for a in answers)
    return {"exact_match": 100.0 * em / len(refs), "f1": 100.0 * f1 / len(refs)}
