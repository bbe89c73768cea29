"""Slot-filling metrics (SUPERB SF, s3prl's definitions) on hand-worked cases, checked
against scikit-learn (per-sample F1) and jiwer (CER of the paired values)."""

from __future__ import annotations

import jiwer
import pytest
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from speechssl.metrics import slot_type_f1, slot_value_cer, slot_value_pairs

REFS = [
    [("genre", "blues")],
    [("artist", "victor hale"), ("playlist", "morning coffee")],
    [],
    [("time", "midnight"), ("date", "monday")],
    [],
]
HYPS = [
    [("genre", "blues")],  # types {genre} = {genre}: F1 1
    [("artist", "victor hall"), ("city", "paris")],  # P 1/2, R 1/2: F1 1/2
    [],  # no slots on either side: F1 1
    [("date", "sunday"), ("date", "monday")],  # P 1, R 1/2: F1 2/3
    [("city", "paris")],  # spurious slot: F1 0
]


def test_slot_type_f1_hand_worked():
    expected = 100 * (1 + 1 / 2 + 1 + 2 / 3 + 0) / 5
    assert slot_type_f1(REFS, HYPS) == pytest.approx(expected)


def test_slot_type_f1_matches_sklearn_samples_f1():
    ref_sets = [{t for t, _ in r} for r in REFS]
    hyp_sets = [{t for t, _ in h} for h in HYPS]
    mlb = MultiLabelBinarizer().fit(ref_sets + hyp_sets)
    reference = f1_score(mlb.transform(ref_sets), mlb.transform(hyp_sets), average="samples",
                         zero_division=1.0)
    assert slot_type_f1(REFS, HYPS) == pytest.approx(100 * reference)


def test_slot_type_f1_ignores_values_and_counts_types_once():
    refs = [[("city", "paris"), ("city", "rome")]]
    assert slot_type_f1(refs, [[("city", "tokyo")]]) == pytest.approx(100.0)
    assert slot_type_f1(refs, [[]]) == 0.0


def test_slot_value_pairs_pick_the_closest_same_type_value():
    refs, hyps = slot_value_pairs(REFS, HYPS)
    assert refs == ["blues", "victor hale", "morning coffee", "midnight", "monday"]
    # playlist and time are missing in the hypothesis -> ""; of sunday/monday, monday is closer
    assert hyps == ["blues", "victor hall", "", "", "monday"]


def test_slot_value_cer_hand_worked_and_jiwer():
    # edits: blues 0, victor hale->hall 1, morning coffee 14 deleted, midnight 8 deleted,
    # monday 0; reference characters 5 + 11 + 14 + 8 + 6 = 44
    assert slot_value_cer(REFS, HYPS) == pytest.approx(100 * 23 / 44)
    refs, hyps = slot_value_pairs(REFS, HYPS)
    assert slot_value_cer(REFS, HYPS) == pytest.approx(100 * jiwer.cer(refs, hyps))


def test_slot_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="2 references but 1"):
        slot_type_f1([[], []], [[]])
    with pytest.raises(ValueError, match="empty"):
        slot_type_f1([], [])
    with pytest.raises(ValueError, match="no slots"):
        slot_value_cer([[]], [[("city", "paris")]])
