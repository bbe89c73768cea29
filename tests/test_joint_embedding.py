"""Joint-embedding losses and views (speechssl/nn/joint_embedding.py, speechssl/nn/views.py),
each against an independent numpy computation or a hand-worked case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechssl.nn import joint_embedding as je
from speechssl.nn import views


def _pair(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_nt_xent_matches_a_loop_over_the_2n_views():
    z1, z2 = _pair()
    loss, acc = je.nt_xent(z1, z2, temperature=0.5)
    z = np.concatenate([z1.numpy(), z2.numpy()]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, total, hits = len(z1), 0.0, 0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = {j: z[i] @ z[j] / 0.5 for j in range(2 * n) if j != i}
        total += -sims[pos] + np.log(sum(np.exp(v) for v in sims.values()))
        hits += max(sims, key=sims.get) == pos
    assert float(loss) == pytest.approx(total / (2 * n), rel=1e-5)
    assert float(acc) == pytest.approx(hits / (2 * n))


def test_nt_xent_of_identical_spread_views_is_near_zero_and_exact():
    z = torch.eye(4) * 3
    loss, acc = je.nt_xent(z, z.clone(), temperature=0.05)
    assert float(loss) < 1e-6 and float(acc) == 1.0


def test_byol_regression_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # parallel (0), orthogonal (2)
    assert float(je.byol_regression(p, z)) == pytest.approx(1.0)


def test_barlow_twins_matches_the_papers_formula():
    z1, z2 = _pair(n=8, d=4)
    loss, parts = je.barlow_twins(z1, z2, lambd=0.01)
    a, b = z1.numpy().astype(np.float64), z2.numpy().astype(np.float64)
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)
    b = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5)
    c = a.T @ b / len(a)
    on = ((1 - np.diag(c)) ** 2).sum()
    off = (c ** 2).sum() - (np.diag(c) ** 2).sum()
    assert float(loss) == pytest.approx(on + 0.01 * off, rel=1e-4)
    assert float(parts["redundancy"]) == pytest.approx(off, rel=1e-4)


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    loss, _ = je.barlow_twins(z, z.clone())
    assert float(loss) < 1e-4


def test_vicreg_matches_the_papers_formula():
    z1, z2 = _pair(n=8, d=4, seed=1)
    loss, parts = je.vicreg(z1, z2)
    a, b = z1.numpy().astype(np.float64), z2.numpy().astype(np.float64)
    inv = ((a - b) ** 2).mean()
    var = sum(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)).mean() for z in (a, b)) / 2
    cov = 0.0
    for z in (a, b):
        c = np.cov(z, rowvar=False)
        cov += ((c ** 2).sum() - (np.diag(c) ** 2).sum()) / 4
    assert float(parts["invariance"]) == pytest.approx(inv, rel=1e-5)
    assert float(parts["variance"]) == pytest.approx(var, rel=1e-5)
    assert float(parts["covariance"]) == pytest.approx(cov, rel=1e-4)
    assert float(loss) == pytest.approx(25 * inv + 25 * var + cov, rel=1e-4)


def test_vicreg_variance_term_punishes_a_collapsed_embedding():
    spread = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 3
    collapsed = torch.ones(64, 8)
    assert float(je.vicreg(spread, spread)[1]["variance"]) < 0.05
    assert float(je.vicreg(collapsed, collapsed)[1]["variance"]) == pytest.approx(1 - 1e-2)


def test_pair_accuracy_and_std_see_collapse():
    z1, _ = _pair(n=10, d=16)
    assert float(je.pair_accuracy(z1, z1 + 0.01)) == 1.0
    const = torch.ones(10, 16)
    assert float(je.pair_accuracy(const, const)) == pytest.approx(0.1)  # chance
    assert float(je.normalized_std(const)) == 0.0
    assert float(je.normalized_std(z1)) > 0.1


def test_segments_are_windows_of_the_valid_frames_zero_filled():
    x = torch.arange(1, 21, dtype=torch.float32).reshape(1, 20, 1).repeat(2, 1, 1)
    n = torch.tensor([20, 5])
    seg = views.segments(x, n, 8, torch.Generator().manual_seed(0))
    assert seg.shape == (2, 8, 1)
    first = seg[0, :, 0]
    assert torch.equal(first, torch.arange(first[0], first[0] + 8))  # consecutive frames
    assert torch.equal(seg[1, :, 0], torch.tensor([1.0, 2, 3, 4, 5, 0, 0, 0]))


def test_log_mixup_exp_mixes_in_the_linear_domain():
    x, o = torch.zeros(3, 4, 2), torch.full((3, 4, 2), np.log(3.0))
    g = torch.Generator().manual_seed(0)
    lam = torch.rand(3, generator=torch.Generator().manual_seed(0)) * 0.4
    out = views.log_mixup_exp(x, o, 0.4, g)
    expected = torch.log((1 - lam) * 1 + lam * 3)[:, None, None].expand_as(x)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(views.log_mixup_exp(x, o, 0.0, g), x, atol=1e-6)


def test_random_resize_crop_keeps_the_shape_and_without_scaling_is_the_identity():
    x = torch.randn(2, 12, 8)
    g = torch.Generator().manual_seed(0)
    assert views.random_resize_crop(x, g).shape == x.shape
    same = views.random_resize_crop(x, g, virtual_scale=1.0, time_scale=(1.0, 1.0),
                                    freq_scale=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-6)


def test_waveform_view_speed_changes_the_length_and_no_augmentation_is_the_identity():
    wav = torch.randn(16000)
    rng = np.random.default_rng(0)
    fast = views.waveform_view(wav, rng, speeds=(1.1,), noise_prob=0.0, reverb_prob=0.0)
    assert fast.numel() == int(np.ceil(16000 / 1.1))
    same = views.waveform_view(wav, rng, speeds=(1.0,), noise_prob=0.0, reverb_prob=0.0)
    assert torch.equal(same, wav)
    noisy = views.waveform_view(wav, rng, speeds=(1.0,), noise_prob=1.0, reverb_prob=1.0,
                                noise_snr_db=(10.0, 10.0))
    assert noisy.shape == wav.shape and not torch.equal(noisy, wav)
