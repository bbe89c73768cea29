"""Text metrics against independent references: Matthews correlation and F1 vs
scikit-learn, Pearson/Spearman vs SciPy, SQuAD EM/F1 on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score
from sklearn.metrics import matthews_corrcoef as sk_mcc

from speechssl import metrics


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_matthews_matches_sklearn(num_classes):
    rng = np.random.default_rng(num_classes)
    refs = rng.integers(num_classes, size=200)
    preds = np.where(rng.random(200) < 0.6, refs, rng.integers(num_classes, size=200))
    ours = metrics.matthews_corrcoef([str(p) for p in preds], [str(r) for r in refs])
    assert ours == pytest.approx(100 * sk_mcc(refs, preds), abs=1e-9)


def test_matthews_degenerate_and_perfect():
    assert metrics.matthews_corrcoef(["1"] * 4, ["1", "0", "1", "0"]) == 0.0  # sklearn: 0
    assert metrics.matthews_corrcoef(["1", "0"], ["1", "0"]) == pytest.approx(100.0)
    assert metrics.matthews_corrcoef(["0", "1"], ["1", "0"]) == pytest.approx(-100.0)


def test_binary_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    refs = [str(v) for v in rng.integers(2, size=150)]
    preds = [str(v) for v in rng.integers(2, size=150)]
    ref = 100 * f1_score(refs, preds, pos_label="1")
    assert metrics.binary_f1(preds, refs, positive="1") == pytest.approx(ref)
    assert metrics.binary_f1(["0", "0"], ["1", "0"]) == 0.0


def test_pearson_spearman_match_scipy_with_ties():
    rng = np.random.default_rng(2)
    refs = rng.integers(0, 6, size=80).astype(float)  # many ties, like STS-B's 0-5 scores
    preds = refs + rng.normal(0, 1.5, size=80)
    preds[:10] = 2.0  # ties on the prediction side too
    assert metrics.pearson(preds, refs) == pytest.approx(100 * stats.pearsonr(preds, refs)[0])
    assert metrics.spearman(preds, refs) == pytest.approx(100 * stats.spearmanr(preds, refs)[0])
    assert metrics.pearson([1.0, 1.0], [0.0, 1.0]) == 0.0


def test_squad_normalization():
    assert metrics.squad_normalize("  The Eiffel-Tower!! ") == "eiffeltower"
    assert metrics.squad_normalize("a cat, an apple and THE dog") == "cat apple and dog"


def test_squad_em_f1_hand_worked():
    # q1: exact after normalization (article, case, punctuation) -> EM 1, F1 1
    # q2: pred "in the big garden" vs "the garden": tokens [in, big, garden] vs [garden]:
    #     precision 1/3, recall 1 -> F1 0.5; EM 0
    # q3: two references, best one counts: "red apple" vs ["apple", "a red apple"] -> 1, 1
    # q4: nothing in common -> 0, 0
    preds = ["the Eiffel Tower.", "in the big garden", "red apple", "kitchen"]
    refs = [["Eiffel tower"], ["the garden"], ["apple", "a red apple"], ["the museum"]]
    out = metrics.squad_scores(preds, refs)
    assert out["exact_match"] == pytest.approx(100 * 2 / 4)
    assert out["f1"] == pytest.approx(100 * (1 + 0.5 + 1 + 0) / 4)


def test_text_metric_input_errors():
    with pytest.raises(ValueError, match="predictions"):
        metrics.matthews_corrcoef(["1"], ["1", "0"])
    with pytest.raises(ValueError, match="empty"):
        metrics.pearson([], [])
    with pytest.raises(ValueError, match="non-empty lists"):
        metrics.squad_scores(["x"], ["x"])
