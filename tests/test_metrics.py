"""Tests for speechssl.metrics against jiwer and scikit-learn."""

import random

import jiwer
import pytest
from sklearn.metrics import accuracy_score

from speechssl.metrics import accuracy, cer, edit_distance, edit_ops, error_rate, per, wer

VOCAB = ["a", "b", "c", "d", "e", "the", "cat"]


def _random_sentence(rng: random.Random, max_len: int, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, max_len)))


def _random_pairs(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for k in range(n):
        vocab = VOCAB[: rng.randint(1, len(VOCAB))]
        max_len = 60 if k % 10 == 0 else 12
        ref = _random_sentence(rng, max_len, vocab) or vocab[0]
        hyp = "" if k % 7 == 0 else _random_sentence(rng, max_len, vocab)
        pairs.append((ref, hyp))
    return pairs


PAIRS = _random_pairs(seed=1234, n=500)


def test_edit_ops_counts_match_jiwer():
    for ref, hyp in PAIRS:
        out = jiwer.process_words(ref, hyp)
        expected = (out.hits, out.substitutions, out.deletions, out.insertions)
        assert edit_ops(ref.split(), hyp.split()) == expected, (ref, hyp)


def test_edit_ops_char_level_counts_match_jiwer():
    # long character sequences exercise rapidfuzz's multi-word bit-parallel path in jiwer
    for ref, hyp in PAIRS[:200]:
        out = jiwer.process_characters(ref, hyp)
        expected = (out.hits, out.substitutions, out.deletions, out.insertions)
        assert edit_ops(list(ref.strip()), list(hyp.strip())) == expected, (ref, hyp)


def test_corpus_rates_match_jiwer():
    for start in range(0, len(PAIRS), 50):
        refs = [r for r, _ in PAIRS[start : start + 50]]
        hyps = [h for _, h in PAIRS[start : start + 50]]
        assert wer(refs, hyps) == pytest.approx(100 * jiwer.wer(refs, hyps), abs=1e-9)
        assert cer(refs, hyps) == pytest.approx(100 * jiwer.cer(refs, hyps), abs=1e-9)
        assert per(refs, hyps) == pytest.approx(wer(refs, hyps), abs=1e-9)


def test_cer_counts_spaces_and_strips_outer_whitespace():
    assert cer(["ab c"], ["abc"]) == pytest.approx(25.0)
    assert cer([" ab "], ["ab"]) == 0.0
    assert cer(["ab c"], ["abc"]) == pytest.approx(100 * jiwer.cer("ab c", "abc"))


@pytest.mark.parametrize(
    "ref, hyp, expected",
    [
        ("a b c", "a x c d", (2, 1, 0, 1)),
        ("a b c", "a b c", (3, 0, 0, 0)),
        ("a b c", "", (0, 0, 3, 0)),
        ("", "a b", (0, 0, 0, 2)),
        ("a b c d", "a c d", (3, 0, 1, 0)),
        ("a b", "x y", (0, 2, 0, 0)),
        # tie (2 subs vs del+ins): jiwer/rapidfuzz keep the match b-b
        ("a b", "b a", (1, 0, 1, 1)),
    ],
)
def test_edit_ops_hand_worked(ref, hyp, expected):
    assert edit_ops(ref.split(), hyp.split()) == expected
    assert edit_distance(ref.split(), hyp.split()) == sum(expected[1:])


def test_edit_distance_on_strings_and_symmetry():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("sitting", "kitten") == 3
    assert edit_distance("", "") == 0


def test_tokens_compare_by_equality_not_by_rapidfuzz_codes():
    # rapidfuzz reads a one-character string as its code point: "a" and 97 would match
    assert edit_distance([97], ["a"]) == 1
    assert edit_ops([97, "a"], ["a", 97]) == (1, 0, 1, 1)
    assert edit_distance([1.0, (2, "x")], [1, (2, "x")]) == 0  # equal tokens, other types
    assert error_rate([["the", "cat"]], [["the", "hat"]]) == pytest.approx(50.0)


def test_hand_worked_rates():
    assert wer(["a b c"], ["a x c d"]) == pytest.approx(200 / 3)
    assert wer(["a b c", "d e"], ["a b c", ""]) == pytest.approx(40.0)
    assert per(["sil k ae t sil"], ["sil k ae sil"]) == pytest.approx(20.0)
    assert error_rate([[1, 2, 3]], [[1, 2, 4, 5]]) == pytest.approx(200 / 3)


def test_error_rate_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="total reference length is 0"):
        wer([""], ["a"])
    with pytest.raises(ValueError):
        error_rate([], [])
    with pytest.raises(TypeError):
        wer("a b", "a b")


def test_accuracy_matches_sklearn():
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randint(1, 40)
        refs = [rng.randint(0, 3) for _ in range(n)]
        preds = [rng.randint(0, 3) for _ in range(n)]
        assert accuracy(preds, refs) == pytest.approx(100 * accuracy_score(refs, preds), abs=1e-9)
    assert accuracy(["yes", "no"], ["yes", "yes"]) == 50.0


def test_accuracy_errors():
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        accuracy([], [])
