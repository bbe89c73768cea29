"""ASV, SD and QbE end to end on the tiny corpus (upstream=fbank), plus their task pieces:
trial lists, x-vector pooling, AM-softmax, frame labels, PIT loss, RTTM, DTW scoring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from downstream.asv import (
    AMSoftmax,
    XVector,
    dev_trials,
    held_out_speakers,
    read_trials,
    statistics_pooling,
)
from downstream.base import build_task
from downstream.qbe import dtw_distances, znorm
from downstream.sd import activity_segments, frame_labels, pit_bce, postprocess
from speechssl import metrics, store
from speechssl.errors import ConfigError, ManifestError
from speechssl.train import train_cell

pytestmark = pytest.mark.slow


def test_asv_cell(make_cfg):
    cfg = make_cfg("upstream=fbank", "downstream=asv", "downstream.optim.max_steps=20",
                   "downstream.hidden_dim=64", "downstream.pool_dim=128",
                   "downstream.embed_dim=64", "downstream.optim.eval_every=10")
    row = train_cell(cfg)
    test = json.loads(row["metrics_json"])["test"]
    assert row["task"] == "asv" and row["metric"] == "eer" and row["higher_is_better"] == 0
    assert 0.0 <= row["test_value"] <= 100.0 and 0.0 <= test["min_dcf"] <= 1.0 + 1e-9
    # dev trials of 2 held-out training speakers (of the tiny corpus's 16): selection
    # and early stopping never see test
    assert 0.0 <= row["dev_value"] <= 100.0 and row["converged"] in (0, 1)
    stored = store.rows(cfg.leaderboard)[0]
    assert stored["test_value"] == row["test_value"] and stored["dev_value"] == row["dev_value"]
    scores = (Path(row["run_dir"]) / "asv_test_scores.txt").read_text().splitlines()
    trials = (Path(cfg.data_dir) / "synth" / "synth-tiny-seed0" / "manifests" / "asv"
              / "trials.txt").read_text().splitlines()
    assert len(scores) == len(trials) > 0 and all(len(s.split()) == 4 for s in scores)
    assert [s.split()[1:] for s in scores] == [t.split() for t in trials]  # label enroll test


def test_sd_cell_writes_rttm(make_cfg):
    cfg = make_cfg("upstream=fbank", "downstream=sd", "downstream.optim.max_steps=20",
                   "downstream.hidden_dim=32", "downstream.optim.eval_every=10",
                   "downstream.optim.batch_seconds=12")
    row = train_cell(cfg)
    dev, test = json.loads(row["metrics_json"])["dev"], json.loads(row["metrics_json"])["test"]
    assert row["metric"] == "der" and 0.0 <= row["test_value"]
    assert dev["threshold"] == test["threshold"] and dev["median_s"] == test["median_s"]
    run_dir = Path(row["run_dir"])
    ref = (run_dir / "sd_test_ref.rttm").read_text().splitlines()
    assert len(ref) == 8 and all(line.startswith("SPEAKER sd-test-") for line in ref)
    hyp = (run_dir / "sd_test_hyp.rttm").read_text().splitlines()
    assert all(len(line.split()) == 10 for line in hyp)


def test_qbe_cell_trains_nothing(make_cfg):
    cfg = make_cfg("upstream=fbank", "downstream=qbe")
    row = train_cell(cfg)
    test = json.loads(row["metrics_json"])["test"]
    assert row["metric"] == "mtwv" and row["trainable_params"] == 0
    assert 0.0 <= row["test_value"] <= 100.0 and 0.0 < test["map"] <= 100.0  # x 100, as SUPERB
    assert json.loads(row["layer_weights"]) == [1.0]  # fbank has one layer: it is chosen
    assert not (Path(row["run_dir"]) / "best.safetensors").exists()
    scored = [json.loads(line) for line in
              (Path(row["run_dir"]) / "qbe_test_scores.jsonl").read_text().splitlines()]
    assert len(scored) == 4 * 12 and sum(r["hit"] for r in scored) >= 4
    # the same detections in the QUESST scorer's stdlist XML (issue 24), read back
    from downstream.qbe import DECISION_THRESHOLD, read_stdlist

    stdlist = read_stdlist(Path(row["run_dir"]) / "qbe_test.stdlist.xml")
    assert sum(len(v) for v in stdlist.values()) == len(scored)
    for r in scored:
        got, yes = stdlist[r["query"]][r["doc"]]
        assert got == pytest.approx(r["score"], abs=5e-5) and yes == (got > DECISION_THRESHOLD)
    from speechssl.train import evaluate_cell

    assert evaluate_cell(cfg)["mtwv"] == pytest.approx(row["test_value"])  # dev picks again


# ------------------------------------------------------------------ ASV pieces


def test_asv_without_dev_speakers_tests_the_last_probe(make_cfg):
    cfg = make_cfg("upstream=fbank", "downstream=asv", "downstream.optim.max_steps=4",
                   "downstream.hidden_dim=16", "downstream.pool_dim=16",
                   "downstream.embed_dim=16", "downstream.dev_speakers=0")
    row = train_cell(cfg)
    assert math.isnan(row["dev_value"]) and 0.0 <= row["test_value"] <= 100.0


def test_asv_dev_split_holds_out_whole_speakers():
    task = build_task("asv", dev_speakers=3, dev_trials=40)
    items = [{"id": f"{s}-{k}", "speaker": s, "path": f"/x/{s}-{k}.wav"}
             for s in "abcdefghijklmnop" for k in range(4)]
    held = held_out_speakers(sorted({it["speaker"] for it in items}), 3)
    assert len(held) == 3
    assert held_out_speakers(list(reversed("abcdefghijklmnop")), 3) == held  # names only
    dev = [it for it in items if it["speaker"] in held]
    trials = dev_trials(dev, task.reference, 40)
    assert trials == dev_trials(list(dev), task.reference, 40)  # deterministic
    labels = [t[0] for t in trials]
    assert labels.count(1) == labels.count(0) == 18  # 3 speakers x C(4,2) target pairs
    for label, a, b in trials:
        assert a != b and (dev[a]["speaker"] == dev[b]["speaker"]) == (label == 1)
    assert len({t[1:] for t in trials}) == len(trials)  # no pair twice
    assert len(dev_trials(dev, task.reference, 10)) == 10  # capped, still balanced


def test_trials_resolve_ids_and_paths_and_name_bad_lines(tmp_path):
    items = [{"id": "a", "path": str(tmp_path / "wav/a.wav")},
             {"id": "b", "path": str(tmp_path / "wav/b.wav")}]
    trials = tmp_path / "manifests/asv/trials.txt"
    trials.parent.mkdir(parents=True)
    trials.write_text(f"1 a b\n\n0 wav/b.wav {tmp_path / 'wav/a.wav'}\n")
    assert read_trials(trials, items, tmp_path) == [(1, 0, 1), (0, 1, 0)]
    trials.write_text("1 a b\n2 a b\n")
    with pytest.raises(ManifestError, match=r"trials.txt:2: expected"):
        read_trials(trials, items, tmp_path)
    trials.write_text("1 a c\n")
    with pytest.raises(ManifestError, match=r"trials.txt:1: utterance 'c'"):
        read_trials(trials, items, tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        read_trials(tmp_path / "missing.txt", items, tmp_path)


def test_statistics_pooling_ignores_padding():
    x = torch.randn(2, 7, 3)
    lengths = torch.tensor([7, 4])
    pooled = statistics_pooling(x, lengths, eps=0.0)
    want = torch.cat([x[1, :4].mean(0), x[1, :4].std(0, unbiased=False)])
    assert torch.allclose(pooled[1], want, atol=1e-5)
    xv = XVector(3, hidden_dim=8, pool_dim=16, embed_dim=5).eval()
    padded = torch.cat([x[1:, :4], torch.full((1, 3, 3), 9.0)], dim=1)
    assert torch.allclose(xv(padded, torch.tensor([4])), xv(x[1:, :4], torch.tensor([4])),
                          atol=1e-5)


def test_am_softmax_is_cross_entropy_of_scaled_margin_cosines():
    torch.manual_seed(0)
    am = AMSoftmax(4, 3, scale=30.0, margin=0.4)
    emb, y = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    cos = F.normalize(emb, dim=1) @ F.normalize(am.weight, dim=0)
    logits = 30.0 * cos
    logits[torch.arange(5), y] -= 30.0 * 0.4
    expect = torch.stack([-torch.log_softmax(logits[i], 0)[y[i]] for i in range(5)]).mean()
    assert am(emb, y).item() == pytest.approx(expect.item(), rel=1e-5)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="am_margin"):
        build_task("asv", am_margin=1.5)
    with pytest.raises(ConfigError, match="thresholds"):
        build_task("sd", thresholds=[1.2])
    with pytest.raises(ConfigError, match="lists of numbers"):
        build_task("sd", median_seconds=["long"])
    with pytest.raises(ConfigError, match="embed_dim"):
        build_task("asv", embed_dim="big")
    with pytest.raises(ConfigError, match="beta"):
        build_task("qbe", beta=0)
    with pytest.raises(ConfigError, match="downstream.layer"):
        build_task("qbe", layer=-1)
    with pytest.raises(ConfigError, match="no option"):
        build_task("qbe", lr=1)


# ------------------------------------------------------------------ SD pieces


def test_frame_labels_and_rttm_segments():
    segs = [{"start": 0.0, "end": 0.22, "speaker": "x"}, {"start": 0.12, "end": 0.4, "speaker": "y"}]
    lab = frame_labels(segs, ["x", "y"], 5, 0.1)  # centres 0.05 .. 0.45
    assert lab.astype(int).tolist() == [[1, 0], [1, 1], [0, 1], [0, 1], [0, 0]]
    assert activity_segments(lab[:, 1], 0.1) == [(pytest.approx(0.1), pytest.approx(0.3))]


def test_pit_bce_is_the_best_speaker_order():
    logits = torch.randn(2, 6, 2)
    labels = (torch.rand(2, 6, 2) > 0.5).float()
    lengths = torch.tensor([6, 4])
    want = []
    for b, n in enumerate(lengths.tolist()):
        per = [F.binary_cross_entropy_with_logits(logits[b, :n], labels[b, :n][:, p])
               for p in ([0, 1], [1, 0])]
        want.append(min(per))
    assert pit_bce(logits, labels, lengths).item() == pytest.approx(torch.stack(want).mean().item(),
                                                                   rel=1e-5)
    swapped = pit_bce(logits, labels[..., [1, 0]], lengths)
    assert swapped.item() == pytest.approx(pit_bce(logits, labels, lengths).item(), rel=1e-6)


def test_sd_probe_padding_never_changes_valid_frames():
    from downstream.sd import FrameLSTM

    torch.manual_seed(0)
    probe = FrameLSTM(6, 8, 2)
    x = torch.randn(2, 12, 6)
    alone = probe(x[1:, :7], torch.tensor([7]))
    padded = x.clone()
    padded[1, 7:] = 50.0  # whatever the padding holds
    out = probe(padded, torch.tensor([12, 7]))
    assert torch.allclose(out[1, :7], alone[0], atol=1e-6)


def test_sd_trains_on_random_windows_of_long_recordings():
    """train_chunk_seconds: features and labels are cut at the same random start inside each
    recording; a short recording stays whole; scoring never cuts."""
    from downstream.base import random_windows

    frames = torch.arange(30.0).reshape(1, 30, 1).repeat(3, 1, 2)  # frame t holds t
    labels = frames[..., :1].repeat(1, 1, 2) + 100
    lengths = torch.tensor([30, 18, 8])
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(40):
        f, lab, n = random_windows(frames, labels, lengths, 10, g)
        assert f.shape == (3, 10, 2) and n.tolist() == [10, 10, 8]
        assert torch.equal(lab - 100, f)  # the labels of the same frames
        for b, length in enumerate(lengths.tolist()):
            first = int(f[b, 0, 0])
            assert 0 <= first <= max(0, length - 10)
            assert f[b, : n[b], 0].tolist() == list(range(first, first + int(n[b])))
        starts.add(int(f[0, 0, 0]))
    assert len(starts) > 10  # starts spread over the 21 possible ones of the first recording
    assert random_windows(frames, labels, lengths, 40)[0] is frames
    task = build_task("sd", train_chunk_seconds=0.1)
    task.frame_shift = 0.01
    seen = []
    probe = lambda x, n: seen.append(x.shape[1]) or x  # noqa: E731
    probe.training = True
    items = [{"segments": [{"start": 0.0, "end": 0.2, "speaker": "a"}]}] * 3
    task.loss(probe, frames, lengths, {"items": items})
    probe.training = False
    task.loss(probe, frames, lengths, {"items": items})
    assert seen == [10, 30]
    with pytest.raises(ConfigError, match="train_chunk_seconds"):
        build_task("sd", train_chunk_seconds=0)


def test_postprocess_threshold_and_median():
    post = np.array([[0.9], [0.2], [0.8], [0.7], [0.1], [0.1]])
    assert postprocess(post, 0.5, 1)[:, 0].tolist() == [1, 0, 1, 1, 0, 0]
    assert postprocess(post, 0.5, 3)[:, 0].tolist() == [1, 1, 1, 1, 0, 0]  # the gap is closed


# ------------------------------------------------------------------ QbE pieces


def test_dtw_scores_rank_the_document_holding_the_query_first():
    g = torch.Generator().manual_seed(0)
    query = torch.randn(6, 10, generator=g)
    docs = [torch.randn(30, 10, generator=g) for _ in range(4)]
    docs[2] = torch.cat([docs[2][:12], query + 0.05 * torch.randn(6, 10, generator=g),
                         docs[2][12:20]])
    dist = dtw_distances([query, docs[1][3:9], query[:4]], docs)
    for k, doc in enumerate(docs):  # s3prl's cost: exp(1 - cos) - 1, each row min-max scaled
        cost = np.expm1(metrics.cosine_distance(query, doc).numpy().astype(np.float64))
        low, high = cost.min(1, keepdims=True), cost.max(1, keepdims=True)
        cost = torch.tensor((cost - low) / (high - low))[None]
        assert dist[0, k].item() == pytest.approx(metrics.subsequence_dtw(cost).item(), abs=1e-5)
    assert dist[1, 1].item() == pytest.approx(0.0, abs=1e-5)  # an exact excerpt
    assert dist[2].tolist() == [0.0] * 4  # under 5 frames: scored 0, as s3prl
    scores = znorm(-dist)
    assert scores[0].argmax().item() == 2
    assert scores[0].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert scores[0].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)  # np.std's
    assert scores[2].tolist() == [0.0] * 4


def test_stdlist_round_trip(tmp_path):
    """The stdlist XML as the QUESST 2014 scorer reads it (s3prl's benchmark.stdlist.xml):
    element and attribute names, 4-decimal scores, YES above the threshold."""
    from downstream.qbe import read_stdlist, write_stdlist

    scores = np.array([[2.5, -0.3, 1.99996], [0.0, 2.00004, -1.0]])
    path = tmp_path / "b.stdlist.xml"
    write_stdlist(path, ["q1", "q2"], ["d1", "d2", "d3"], scores)
    text = path.read_text()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<stdlist ')
    assert '<detected_termlist termid="q1" term_search_time="1.0" oov_term_count="1">' in text
    assert ('<term file="d1" channel="1" tbeg="0.000" dur="0.00" score="2.5000" '
            'decision="YES" />') in text
    got = read_stdlist(path)
    assert got == {"q1": {"d1": (2.5, True), "d2": (-0.3, False), "d3": (2.0, False)},
                   "q2": {"d1": (0.0, False), "d2": (2.0, True), "d3": (-1.0, False)}}


def test_qbe_features_are_normalized_per_dimension_over_the_split():
    """s3prl's feature_normalization: mean and std per dimension over every frame of the
    split's queries and documents, so a constant offset or scale of a dimension is gone."""
    from downstream.qbe import feature_normalizer

    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(n, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 5.0
             for n in (6, 9, 12)]
    mean, std = feature_normalizer(feats)
    frames = torch.cat(feats)
    torch.testing.assert_close(mean, frames.mean(0))
    torch.testing.assert_close(std, frames.std(0))
    normed = torch.cat([(f - mean) / std for f in feats])
    torch.testing.assert_close(normed.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.std(0), torch.ones(3), atol=1e-5, rtol=0)
    assert feature_normalizer([torch.ones(4, 2)])[1].tolist() == pytest.approx([1e-9, 1e-9])


def test_qbe_manifest_errors_name_the_line():
    task = build_task("qbe")
    items = [{"id": "q", "kind": "query", "term": "cat", "_manifest": "m.jsonl", "_line": 1},
             {"id": "d", "kind": "document", "_manifest": "m.jsonl", "_line": 2}]
    with pytest.raises(ManifestError, match=r"m.jsonl:2: 'kind'"):
        task.roles(items)


def test_asv_trains_on_random_crops_when_asked():
    """``downstream.train_crop_seconds`` (s3prl: 8 s): in training the x-vector sees a
    random window of each utterance; in eval the whole one."""
    task = build_task("asv", hidden_dim=8, pool_dim=8, embed_dim=4, train_crop_seconds=0.5)
    task.frame_shift = 0.01
    task.index = {"a": 0, "b": 1}
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = lambda emb, labels: emb.sum() * 0

        def forward(self, features, lengths):
            seen.append((features.shape[1], lengths.tolist()))
            return features.mean(1)

    probe = Probe().train()
    feats, lengths = torch.randn(2, 120, 3), torch.tensor([120, 80])
    items = [{"speaker": "a"}, {"speaker": "b"}]
    task.loss(probe, feats, lengths, {"items": items})
    assert seen[-1] == (50, [50, 50])  # 0.5 s of 10-ms frames
    task.loss(probe.eval(), feats, lengths, {"items": items})
    assert seen[-1] == (120, [120, 80])
    with pytest.raises(ConfigError, match="downstream.train_crop_seconds"):
        build_task("asv", train_crop_seconds=0)
