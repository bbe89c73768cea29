"""Scorers of ASV (EER, minDCF), SD (DER), QbE (subsequence DTW, MTWV, MAP) against
scikit-learn / SciPy references, pyannote.metrics (DER, and the RTTM files SD writes), brute
force and hand-worked cases. pyannote.metrics is in the dev extra: these tests never skip."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pyannote.core import Annotation, Segment, Timeline
from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import average_precision_score, roc_curve

from downstream.base import build_task
from speechssl import metrics


def _eer_reference(scores, labels) -> float:
    """The usual recipe: root of 1 - x - TPR(x) on the interpolated ROC (in percent)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return 100.0 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


def test_eer_hand_worked():
    # targets 0.9 0.4, non-targets 0.6 0.1: at threshold 0.6 FPR = FNR = 0.5 -> 50 %
    assert metrics.eer([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == pytest.approx(50.0)
    assert metrics.eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert metrics.eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_eer_matches_sklearn_roc_reference(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    labels[:2] = (0, 1)
    scores = rng.normal(size=300) + 1.2 * labels
    assert metrics.eer(scores, labels) == pytest.approx(_eer_reference(scores, labels), abs=1e-6)


def _min_dcf_brute(scores, labels, p, c_miss=1.0, c_fa=1.0):
    scores, labels = np.asarray(scores), np.asarray(labels)
    best = np.inf
    for t in [*np.unique(scores), np.inf]:
        acc = scores >= t
        p_miss = np.mean(~acc[labels == 1])
        p_fa = np.mean(acc[labels == 0])
        best = min(best, c_miss * p_miss * p + c_fa * p_fa * (1 - p))
    return best / min(c_miss * p, c_fa * (1 - p))


def test_min_dcf_hand_worked_and_brute_force():
    # one target below every non-target: best is rejecting all (cost p) -> normalized 1.0,
    # or accepting the top target only: P_miss 0.5 -> 0.5 p / p = 0.5
    assert metrics.min_dcf([0.9, 0.1, 0.5, 0.4], [1, 1, 0, 0]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + 2 * labels, 1)  # with ties
    for p in (0.01, 0.05, 0.5):
        assert metrics.min_dcf(scores, labels, p_target=p) == pytest.approx(
            _min_dcf_brute(scores, labels, p))


def test_verification_metrics_reject_bad_trials():
    with pytest.raises(ValueError, match="both"):
        metrics.eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        metrics.min_dcf([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="p_target"):
        metrics.min_dcf([0.1, 0.2], [1, 0], p_target=0.0)


def test_der_hand_worked():
    # 10 frames. ref: A on 0-5, B on 4-9 (overlap 4-5). hyp: X on 0-3, Y on 3-9, Z on 9.
    ref = np.zeros((10, 2), bool)
    ref[0:6, 0] = ref[4:10, 1] = True
    hyp = np.zeros((10, 3), bool)
    hyp[0:4, 0] = hyp[3:10, 1] = hyp[9, 2] = True
    # mapping A->X (overlap 4), B->Y (overlap 6); n_ref = 1111222211 ... speech 12
    # frame 3: ref {A}, hyp {X,Y}: FA 1; frames 4,5: ref {A,B}, hyp {Y}: miss 1 each
    # frame 9: ref {B}, hyp {Y,Z}: FA 1; confusion: none (every frame's min count is matched)
    e = metrics.diarization_errors(ref, hyp)
    assert e == {"miss": 2.0, "false_alarm": 2.0, "confusion": 0.0, "speech": 12.0}
    assert metrics.der([ref], [hyp]) == pytest.approx(100 * 4 / 12)
    # swapped speaker labels cost nothing; a wrong speaker is confusion
    assert metrics.der([ref], [ref[:, ::-1]]) == 0.0
    one = np.zeros((10, 2), bool)
    one[:, 0] = True
    # hyp says one speaker everywhere: mapping B->X (6 frames) beats A->X (6): tie,
    # either way frames of the unmapped speaker are confused or missed
    e = metrics.diarization_errors(ref, one)
    assert e["speech"] == 12 and e["miss"] == 2 and e["false_alarm"] == 0
    assert e["confusion"] == 4


def _der_brute(ref, hyp):
    """Minimum over every injective mapping of reference to hypothesis speakers."""
    s_ref, s_hyp = ref.shape[1], hyp.shape[1]
    pad = max(s_ref, s_hyp)
    r = np.concatenate([ref, np.zeros((len(ref), pad - s_ref), bool)], 1)
    h = np.concatenate([hyp, np.zeros((len(hyp), pad - s_hyp), bool)], 1)
    best = np.inf
    for perm in itertools.permutations(range(pad)):
        n_ref, n_hyp = r.sum(1), h.sum(1)
        ok = (r & h[:, list(perm)]).sum(1)
        err = (np.maximum(n_ref, n_hyp) - ok).sum()  # miss + FA + confusion per frame
        best = min(best, err)
    return 100.0 * best / ref.sum()


@pytest.mark.parametrize("seed", range(4))
def test_der_matches_brute_force_over_mappings(seed):
    rng = np.random.default_rng(seed)
    refs = [rng.random((50, 2)) < 0.5 for _ in range(3)]
    hyps = [rng.random((50, 3)) < 0.4 for _ in range(3)]
    errors = sum(_der_brute(r, h) * r.sum() for r, h in zip(refs, hyps, strict=True))
    assert metrics.der(refs, hyps) == pytest.approx(errors / sum(r.sum() for r in refs))


@pytest.mark.parametrize("seed", range(3))
def test_der_matches_pyannote_metrics(seed):
    """pyannote.metrics DER (collar 0, overlap scored) on random segments whose boundaries
    fall on 10 ms frames."""
    rng = np.random.default_rng(seed)
    frames = 1000  # 10 s of 10 ms frames

    def random_annotation(speakers):
        ann, act = Annotation(), np.zeros((frames, len(speakers)), bool)
        for k, spk in enumerate(speakers):
            cuts = np.sort(rng.choice(frames + 1, 6, replace=False))
            for a, b in cuts.reshape(3, 2):  # three disjoint turns per speaker
                ann[Segment(a / 100, b / 100), f"{spk}{a}"] = spk
                act[a:b, k] = True
        return ann, act

    ref, r = random_annotation(["A", "B"])
    hyp, h = random_annotation(["x", "y", "z"])
    uem = Timeline([Segment(0, frames / 100)])
    expected = 100 * DiarizationErrorRate(collar=0.0, skip_overlap=False)(ref, hyp, uem=uem)
    assert metrics.der([r], [h]) == pytest.approx(expected, abs=1e-6)


def test_sd_rttm_files_scored_by_pyannote_match_our_der(tmp_path):
    """SD's evaluate_split writes sd_<split>_{hyp,ref}.rttm; pyannote.database reads them and
    pyannote.metrics scores them (collar 0, overlap scored, each recording over its frames)
    to the DER the task reports. Reference turns lie on the 10 ms frame grid, where frame
    labels and continuous time agree exactly."""
    rng = np.random.default_rng(0)
    task = build_task("sd", thresholds=[0.4, 0.5, 0.6], median_seconds=[0.0, 0.05])
    assert task.frame_shift == 0.01

    def recording(split, k):
        frames = int(rng.integers(300, 600))
        segments = []
        for speaker in ("spk_a", "spk_b"):
            cuts = np.sort(rng.choice(frames + 1, 4, replace=False)) / 100
            segments += [{"start": float(a), "end": float(b), "speaker": speaker}
                         for a, b in cuts.reshape(2, 2)]  # two turns each, may overlap
        item = {"id": f"sd-{split}-{k}", "segments": segments}
        truth = task.labels(item, frames).astype(float)
        posteriors = np.clip(truth[:, rng.permutation(2)] + rng.normal(0, 0.35, truth.shape),
                             0, 1)  # a noisy, speaker-swapped guess
        return item, posteriors

    results = {}
    for split in ("dev", "test"):  # dev tunes the threshold and median filter, test uses them
        items, posteriors = zip(*[recording(split, k) for k in range(6)], strict=True)
        results[split] = task.evaluate_split(split, list(posteriors), list(items),
                                             out_dir=tmp_path)
        hyp = load_rttm(tmp_path / f"sd_{split}_hyp.rttm")
        ref = load_rttm(tmp_path / f"sd_{split}_ref.rttm")
        assert set(ref) == {it["id"] for it in items}
        der = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        for it, p in zip(items, posteriors, strict=True):
            uem = Timeline([Segment(0, len(p) * task.frame_shift)])
            der(ref[it["id"]], hyp.get(it["id"], Annotation(uri=it["id"])), uem=uem)
        assert 0 < results[split]["der"] < 100
        assert results[split]["der"] == pytest.approx(100 * abs(der), abs=1e-6), split
    assert results["test"]["threshold"] == results["dev"]["threshold"]


def _dtw_brute(cost: np.ndarray) -> float:
    """Every path: start anywhere, the document index advances 0, 1 or 2 per query frame."""
    n, m = cost.shape
    best = np.inf
    for start in range(m):
        for steps in itertools.product((0, 1, 2), repeat=n - 1):
            js = start + np.concatenate([[0], np.cumsum(steps)])
            if js[-1] < m:
                best = min(best, cost[np.arange(n), js].sum())
    return best / n


def test_subsequence_dtw_matches_brute_force():
    rng = np.random.default_rng(0)
    cost = rng.random((3, 4, 7))
    lengths = torch.tensor([7, 5, 2])
    got = metrics.subsequence_dtw(torch.tensor(cost), lengths)
    want = [_dtw_brute(cost[b, :, : int(n)]) for b, n in enumerate(lengths)]
    assert got.tolist() == pytest.approx(want)


def test_subsequence_dtw_finds_embedded_query():
    rng = torch.Generator().manual_seed(0)
    query = torch.randn(5, 8, generator=rng)
    doc = torch.cat([torch.randn(10, 8, generator=rng), query.repeat_interleave(2, 0),
                     torch.randn(4, 8, generator=rng)])  # the query, slowed down x2
    d = metrics.subsequence_dtw(metrics.cosine_distance(query, doc)[None])
    assert d.item() == pytest.approx(0.0, abs=1e-5)
    assert metrics.cosine_distance(torch.ones(1, 3), -torch.ones(2, 3)).tolist() == [[2.0, 2.0]]


def test_twv_and_mtwv_hand_worked():
    # 2 queries x 4 documents, beta 1 to keep the arithmetic visible
    scores = np.array([[0.9, 0.8, 0.3, 0.1],
                       [0.7, 0.2, 0.6, 0.4]])
    labels = np.array([[1, 0, 1, 0],
                       [0, 0, 1, 0]])
    # threshold 0.6: q0 hits 1/2, FA 1/2; q1 hits 1/1, FA 1/3 (0.7)
    # TWV = 1 - mean(P_miss + P_fa) = 1 - ((0.5 + 0.5) + (0 + 1/3)) / 2 = 1/3
    assert metrics.twv(scores, labels, 0.6, beta=1.0) == pytest.approx(1 / 3)
    # threshold 0.9: q0 hit 1/2 -> 1 - (0.5 + 1) / 2 = 0.25; threshold 0.3: q0 2/2 hits,
    # 1/2 FA; q1 1/1 hit, 2/3 FA -> 1 - (0.5 + 2/3) / 2 = 5/12, the best
    grid = [metrics.twv(scores, labels, t, beta=1.0) for t in np.unique(scores)]
    assert max(grid) == pytest.approx(5 / 12)
    assert metrics.mtwv(scores, labels, beta=1.0) == pytest.approx(5 / 12)
    # with beta 999.9 every false alarm is ruinous: only 'detect q0 at 0.9' is positive
    assert metrics.mtwv(scores, labels) == pytest.approx(0.25)


@pytest.mark.parametrize("seed", range(3))
def test_mtwv_is_max_of_twv_over_thresholds(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random((6, 30)) < 0.2
    labels[:, 0] = True
    scores = np.round(rng.normal(size=(6, 30)) + 1.5 * labels, 1)
    for beta in (1.0, 10.0, 999.9):
        grid = [metrics.twv(scores, labels, t, beta) for t in [*np.unique(scores), np.inf]]
        assert metrics.mtwv(scores, labels, beta) == pytest.approx(max(grid))


def test_map_hand_worked_and_sklearn():
    # ranks of the targets: 1 and 3 -> AP = (1/1 + 2/3) / 2 = 5/6; second query: rank 2 -> 1/2
    scores = np.array([[0.9, 0.8, 0.3, 0.1], [0.7, 0.2, 0.6, 0.4]])
    labels = np.array([[1, 0, 1, 0], [0, 0, 1, 0]])
    assert metrics.mean_average_precision(scores, labels) == pytest.approx((5 / 6 + 1 / 2) / 2)
    rng = np.random.default_rng(1)
    labels = rng.random((5, 40)) < 0.3
    labels[:, 0] = True
    scores = np.round(rng.normal(size=(5, 40)) + labels, 1)  # with ties
    want = np.mean([average_precision_score(y, s) for s, y in zip(scores, labels, strict=True)])
    assert metrics.mean_average_precision(scores, labels) == pytest.approx(want)


def test_detection_metrics_skip_absent_queries_and_reject_shape_errors():
    scores = np.array([[0.9, 0.1], [0.5, 0.5]])
    labels = np.array([[1, 0], [0, 0]])  # query 1 never occurs: not scored
    assert metrics.mean_average_precision(scores, labels) == 1.0
    assert metrics.mtwv(scores, labels) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.mtwv(scores, labels[:, :1])
    with pytest.raises(ValueError, match="no query"):
        metrics.mtwv(scores, np.zeros((2, 2)))
