"""Shared pieces of the contrastive / predictive upstreams (Issue 4): negative sampling,
InfoNCE and wav2vec losses, quantizers, wav2vec 2.0 masking, conv encoder and positions,
EMA teachers, k-means targets and their quality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from speechssl.nn.contrastive import (
    binary_contrastive,
    contrastive_logits,
    gather_frames,
    info_nce,
    sample_negatives,
)
from speechssl.nn.conv_encoder import (
    CPC_KERNELS,
    CPC_STRIDES,
    WAV2VEC2_KERNELS,
    WAV2VEC2_STRIDES,
    ConvFeatureEncoder,
    conv_output_lengths,
)
from speechssl.nn.ema import ema_decay, ema_update_
from speechssl.nn.kmeans import assign, cluster_quality, fit_kmeans, phone_frames, speech_frames
from speechssl.nn.masking import valid_mask, wav2vec2_mask
from speechssl.nn.quantize import GroupedKMeansQuantizer, GumbelQuantizer
from speechssl.nn.transformer import TransformerEncoder


@pytest.mark.parametrize("cross_batch", [False, True])
def test_sampled_negatives_never_include_the_positive(cross_batch):
    lengths = torch.tensor([7, 3, 1, 5])
    cand = valid_mask(lengths, 7)
    idx = sample_negatives(cand, 20, torch.Generator().manual_seed(0), cross_batch=cross_batch)
    assert idx.shape == (4, 7, 20)
    own = torch.arange(4 * 7).view(4, 7, 1)
    flat_cand = cand.flatten()
    for b in range(4):
        for t in range(int(lengths[b])):
            if not cross_batch and lengths[b] == 1:
                continue  # a one-frame sequence has no other frame to offer
            assert (idx[b, t] != own[b, t]).all()
            assert flat_cand[idx[b, t]].all()  # only valid frames
            if not cross_batch:
                assert (idx[b, t] // 7 == b).all()  # the same sequence
    if cross_batch:
        assert (idx[0, :7] // 7 != 0).any()  # other sequences do get drawn


def test_negatives_come_from_the_candidates_and_cover_them():
    cand = torch.zeros(1, 10, dtype=torch.bool)
    cand[0, [2, 3, 7]] = True
    idx = sample_negatives(cand, 200, torch.Generator().manual_seed(1))
    assert set(idx[0, 3].tolist()) == {2, 7}  # a candidate never draws itself
    assert set(idx[0, 0].tolist()) == {2, 3, 7}  # a non-candidate draws from all of them


def test_info_nce_hand_case_and_picks_the_positive():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss, acc = info_nce(logits)
    expected = (-math.log(math.e ** 2 / (math.e ** 2 + 2)) - math.log(1 / (2 + math.e))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 0.5
    # dot products: the prediction equal to the positive scores it first
    pred = torch.tensor([[1.0, 0.0]])
    logits = contrastive_logits(pred, torch.tensor([[3.0, 0.0]]), torch.tensor([[[0.0, 3.0],
                                                                                [-3.0, 0.0]]]))
    assert logits.tolist() == [[3.0, 0.0, -3.0]]
    assert info_nce(logits)[1].item() == 1.0


def test_cosine_logits_with_temperature_mask_identical_distractors():
    pred = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[2.0, 0.0]])
    negs = torch.tensor([[[0.0, 5.0], [2.0, 0.0]]])  # the second equals the positive
    logits = contrastive_logits(pred, pos, negs, "cosine", temperature=0.1, mask_identical=True)
    assert logits[0, 0].item() == pytest.approx(10.0) and logits[0, 1].item() == pytest.approx(0.0)
    assert logits[0, 2].item() == float("-inf")


def test_binary_contrastive_hand_case():
    loss, acc = binary_contrastive(torch.tensor([0.0, 2.0]), torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    sp = torch.nn.functional.softplus
    row0 = 3 * math.log(2)  # -log s(0) - 2 log s(0)
    row1 = sp(torch.tensor(-2.0)) + sp(torch.tensor(1.0)) + sp(torch.tensor(-1.0))
    assert loss.item() == pytest.approx((row0 + row1.item()) / 2, rel=1e-6)
    assert acc.item() == 0.5


def test_gather_frames():
    x = torch.arange(12.0).view(2, 3, 2)
    assert gather_frames(x, torch.tensor([[4, 0]])).tolist() == [[[8.0, 9.0], [0.0, 1.0]]]


def test_gumbel_quantizer_is_differentiable():
    torch.manual_seed(0)
    q = GumbelQuantizer(8, num_codes=5, code_dim=6, groups=2).train()
    x = torch.randn(2, 4, 8, requires_grad=True)
    out = q(x)
    assert out["codes"].shape == (2, 4, 2) and out["quantized"].shape == (2, 4, 6)
    (out["quantized"].pow(2).sum() - out["prob_perplexity"]).backward()
    assert x.grad.abs().sum() > 0 and q.logits.weight.grad.abs().sum() > 0
    assert q.codebook.grad.abs().sum() > 0
    # the forward is a hard choice: every group's slice is one codebook row
    g0 = out["quantized"][..., :3].detach()
    assert torch.equal(g0, q.codebook[0][out["codes"][..., 0]].detach())


def test_grouped_kmeans_quantizer_hand_case():
    q = GroupedKMeansQuantizer(dim=4, num_codes=2, groups=2, gamma=0.25)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 2.0]]]))
    z = torch.tensor([[[0.9, 0.8, 0.1, 1.5]]], requires_grad=True)
    out = q(z)
    assert out["codes"].tolist() == [[[1, 1]]]
    assert out["quantized"].tolist() == [[[1.0, 1.0, 0.0, 2.0]]]
    err = torch.tensor([0.1, 0.2, 0.1, 0.5]).pow(2).mean()  # (z - q)^2, mean over elements
    assert out["loss"].item() == pytest.approx(1.25 * err.item(), rel=1e-5)
    out["quantized"].sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through


def test_wav2vec2_mask_spans():
    lengths = torch.tensor([400, 120, 5])
    g = torch.Generator().manual_seed(0)
    m = wav2vec2_mask(lengths, prob=0.065, span=10, generator=g)
    assert m.shape == (3, 400)
    assert not m[1, 120:].any() and not m[2, 5:].any()  # padding never masked
    assert m[2, :5].all()  # a sequence shorter than a span: masked whole (min 2 spans)
    # runs of masked frames come in multiples of at least one span
    row = m[0].int().tolist()
    runs, cur = [], 0
    for v in row + [0]:
        if v:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    assert min(runs) >= 10
    again = wav2vec2_mask(lengths, 0.065, 10, torch.Generator().manual_seed(0))
    assert torch.equal(m, again)
    long = wav2vec2_mask(torch.full((20,), 2000), 0.065, 10, torch.Generator().manual_seed(1))
    assert long.float().mean().item() == pytest.approx(1 - (1 - 0.065) ** 10, abs=0.04)
    assert not wav2vec2_mask(lengths, 0.0, 10, g).any()


def test_conv_encoder_lengths_and_strides():
    n = torch.tensor([16000, 400, 399])
    assert conv_output_lengths(n, WAV2VEC2_KERNELS, WAV2VEC2_STRIDES).tolist() == [49, 1, 0]
    assert conv_output_lengths(n[:1], CPC_KERNELS, CPC_STRIDES).tolist() == [98]
    enc = ConvFeatureEncoder(8, WAV2VEC2_KERNELS, WAV2VEC2_STRIDES)
    assert enc.stride == 320
    y, m = enc(torch.randn(3, 16000), n)
    assert y.shape == (3, 49, 8) and m.tolist() == [49, 1, 0]
    assert (y[1, 1:] == 0).all()


def test_conv_positions_option():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 2, 32, dropout=0.0, attention_dropout=0.0, position="conv",
                             conv_pos_kernel=8, conv_pos_groups=4).eval()
    x = torch.randn(2, 10, 16)
    pad = ~valid_mask(torch.tensor([10, 6]), 10)
    y = enc.add_positions(x, pad)
    assert y.shape == x.shape and not torch.equal(y[:, :6], x[:, :6])
    # padding does not leak into the valid frames
    x2 = x.clone()
    x2[1, 6:] = 100.0
    assert torch.allclose(enc.add_positions(x2, pad)[1, :6], y[1, :6])
    with pytest.raises(ValueError, match="conv"):
        TransformerEncoder(16, 1, 2, 32, position="rotary")


def test_ema_schedule_and_update_math():
    assert ema_decay(0, 0.999, 0.9999, 100) == pytest.approx(0.999)
    assert ema_decay(50, 0.999, 0.9999, 100) == pytest.approx(0.99945)
    assert ema_decay(100, 0.999, 0.9999, 100) == ema_decay(10**6, 0.999, 0.9999, 100) == 0.9999
    teacher, student = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        teacher.bias.fill_(0.0)
        student.weight.fill_(3.0)
        student.bias.fill_(2.0)
    ema_update_(teacher, student, 0.75)
    assert teacher.weight.tolist() == [[1.5, 1.5]]  # 0.75 * 1 + 0.25 * 3
    assert teacher.bias.tolist() == [0.5]


def test_kmeans_targets_are_stable_for_a_fixed_seed():
    rng = np.random.RandomState(0)
    feats = np.concatenate([rng.randn(300, 3) + c for c in ([0, 0, 0], [6, 0, 0], [0, 6, 0])])
    a = fit_kmeans(feats, 3, seed=5, n_init=1, max_iter=20)
    b = fit_kmeans(feats, 3, seed=5, n_init=1, max_iter=20)
    assert np.array_equal(a, b)
    ids = assign(torch.from_numpy(feats).float(), torch.from_numpy(a)).numpy()
    # each true blob lands in one cluster
    for i in range(3):
        assert len(set(ids[i * 300:(i + 1) * 300].tolist())) == 1
    with pytest.raises(ValueError, match="fewer"):
        fit_kmeans(feats[:2], 3)


def test_cluster_quality_matches_sklearn():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 4, 500)
    clusters = (labels + (rng.rand(500) < 0.3) * rng.randint(0, 7, 500)) % 7
    q = cluster_quality(labels, clusters)
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    h = -(p * np.log(p)).sum()
    assert q["pnmi"] == pytest.approx(mutual_info_score(labels, clusters) / h, rel=1e-9)
    purity = sum(np.bincount(labels[clusters == k]).max() for k in np.unique(clusters)) / 500
    assert q["purity"] == pytest.approx(purity)
    assert cluster_quality(np.array([0, 0, 1, 1]), np.array([5, 5, 9, 9]))["pnmi"] == pytest.approx(1.0)
    assert q["clusters_used"] == len(np.unique(clusters))


def test_speech_frames_from_energy():
    t = torch.arange(16000) / 16000
    wav = torch.cat([torch.zeros(8000) + 1e-6 * torch.randn(8000), 0.5 * torch.sin(2 * math.pi * 200 * t)])
    lab = speech_frames(wav, 148)
    assert not lab[:45].any() and lab[55:140].all()


def test_phone_frames_label_each_frame_by_its_centre():
    # 10 ms hop, 25 ms window: frame t is centred on t * 0.01 + 0.0125 s
    ali = [["h", 0.02, 0.05], ["l", 0.05, 0.05], ["ə", 0.05, 0.08], ["ʊ", 0.10, 0.12]]
    lab = phone_frames(ali, 13, hop=160, window=400, sample_rate=16000)
    # centres 12.5, 22.5, 32.5, 42.5, 52.5, ... 132.5 ms; the zero-length "l" takes no frame
    assert lab.tolist() == ["sil", "h", "h", "h", "ə", "ə", "ə", "sil", "sil", "ʊ", "ʊ",
                            "sil", "sil"]
    assert phone_frames([], 3).tolist() == ["sil"] * 3
    # 20 ms frames of a conv encoder (320 samples, 400-sample receptive field): centres
    # 12.5, 32.5, 52.5, 72.5, 92.5, 112.5 ms
    assert phone_frames(ali, 6, hop=320).tolist() == ["sil", "h", "ə", "ə", "sil", "ʊ"]


def test_masked_group_norm_ignores_padding():
    from speechssl.nn.conv_encoder import MaskedGroupNorm

    torch.manual_seed(0)
    norm = MaskedGroupNorm(2, 4)
    ref = torch.nn.GroupNorm(2, 4)
    with torch.no_grad():
        norm.weight.uniform_()
        ref.weight.copy_(norm.weight)
    x = torch.randn(1, 4, 9)
    padded = torch.cat([x, torch.full((1, 4, 5), 7.0)], dim=-1)
    mask = valid_mask(torch.tensor([9]), 14)
    assert torch.allclose(norm(padded, mask)[..., :9], ref(x), atol=1e-5)
    assert torch.allclose(norm(x), ref(x))  # no mask: plain GroupNorm


def test_wav2vec_step_scores_infonce_against_a_loop():
    """upstream.loss=infonce (wav2vec / vq-wav2vec): per step k, the cross-entropy of the
    true z_{i+k} among it and its distractors, averaged over the valid pairs, summed over k;
    with every target alike (a collapsed codebook) it is k ln(1 + K), chance, not a minimum."""
    from speechssl.upstream.wav2vec import step_scores

    torch.manual_seed(0)
    B, T, C, K = 2, 6, 4, 3
    c, z, lengths = torch.randn(B, T, C), torch.randn(B, T, C), torch.tensor([6, 4])
    neg_idx = sample_negatives(valid_mask(lengths, T), K, torch.Generator().manual_seed(0))
    steps = torch.nn.ModuleList(torch.nn.Linear(C, C) for _ in range(2))
    loss, acc = step_scores(c, z, lengths, neg_idx, steps, "infonce")
    flat, expected, accs = z.reshape(-1, C), 0.0, []
    for k in (1, 2):
        rows, hits = [], []
        for b in range(B):
            for i in range(int(lengths[b]) - k):
                scores = torch.cat([z[b, i + k][None], flat[neg_idx[b, i + k]]]) @ steps[k - 1](c[b, i])
                rows.append(-torch.log_softmax(scores, 0)[0])
                hits.append(bool((scores[0] > scores[1:]).all()))
        expected += torch.stack(rows).mean().item()
        accs.append(sum(hits) / len(hits))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert acc.item() == pytest.approx(sum(accs) / 2)
    same = torch.ones(B, T, C)
    collapsed, _ = step_scores(c, same, lengths, neg_idx, steps, "infonce")
    assert collapsed.item() == pytest.approx(2 * math.log(1 + K), rel=1e-5)
