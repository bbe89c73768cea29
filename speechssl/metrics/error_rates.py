"""Edit-distance error rates in percent: the Levenshtein alignment (jiwer's tie-breaking),
corpus error rate, WER, CER and PER (SUPERB ASR and PR)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence


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
