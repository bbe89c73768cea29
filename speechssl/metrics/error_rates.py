"""Edit-distance error rates in percent: the Levenshtein alignment (rapidfuzz's C++ kernel,
the one jiwer uses, so the counts and their tie-breaking are jiwer's), corpus error rate,
WER, CER and PER (SUPERB ASR and PR)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from rapidfuzz.distance import Levenshtein


def _codes(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[Sequence, Sequence]:
    """``ref`` and ``hyp`` as rapidfuzz reads them exactly: two strings as they are, any
    other token sequences as integer codes, one per distinct token of the pair (rapidfuzz
    would otherwise compare ``hash()`` values, which distinct tokens may share)."""
    if isinstance(ref, str) and isinstance(hyp, str):
        return ref, hyp
    codes: dict[Hashable, int] = {}
    return ([codes.setdefault(t, len(codes)) for t in ref],
            [codes.setdefault(t, len(codes)) for t in hyp])


def edit_ops(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[int, int, int, int]:
    """Count the operations of a minimum-edit alignment of ``hyp`` against ``ref``.

    The alignment is rapidfuzz's (``Levenshtein.editops``), as in jiwer: among equally cheap
    alignments, the common prefix and suffix are matched first, then the alignment is traced
    back from the end preferring a deletion, then an insertion, then a match/substitution.

    Args:
        ref: reference tokens, length N.
        hyp: hypothesis tokens, length M.

    Returns:
        ``(hits, substitutions, deletions, insertions)`` with ``hits + S + D == N`` and
        ``hits + S + I == M``.
    """
    subs = dels = ins = 0
    for tag, _, _ in Levenshtein.editops(*_codes(ref, hyp)).as_list():
        if tag == "replace":
            subs += 1
        elif tag == "delete":
            dels += 1
        else:
            ins += 1
    return len(ref) - subs - dels, subs, dels, ins


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit costs) between token sequences ``ref`` (N,) and ``hyp`` (M,)."""
    return Levenshtein.distance(*_codes(ref, hyp))


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


def _chars(text: str) -> str:
    """Characters of ``text`` (inner spaces kept, outer whitespace stripped, like jiwer.cer),
    as a string: rapidfuzz compares two strings directly, with no token codes."""
    return text.strip()


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
