"""SQuAD v1.1's exact match and token F1 x 100 (Rajpurkar et al., 2016) for extractive
question answering, over normalized answer strings."""

from __future__ import annotations

from collections.abc import Sequence

from speechssl.metrics.classification import _paired_lists


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
