"""Slot filling (SUPERB SF; definitions of s3prl downstream/ctc/metric.py): slot-type F1 and
slot-value CER in percent."""

from __future__ import annotations

from collections.abc import Sequence

from speechssl.metrics.error_rates import edit_distance, error_rate

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
