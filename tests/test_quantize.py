"""Quantizers (speechssl/nn/quantize.py) on hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from speechssl.nn import quantize


def test_straight_through_gradient_reaches_encoder_input():
    torch.manual_seed(0)
    vq = quantize.VectorQuantizer(8, 4)
    encoder = torch.nn.Linear(3, 4)
    x = torch.randn(2, 5, 3, requires_grad=True)
    out = vq(encoder(x))
    (out["quantized"].pow(2).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert encoder.weight.grad.abs().sum() > 0


def test_commitment_loss_hand_case():
    vq = quantize.VectorQuantizer(2, 2, beta=0.25)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    z = torch.tensor([[[0.5, 0.0], [1.75, 1.0]]])
    out = vq.eval()(z)
    assert out["codes"].tolist() == [[0, 1]]
    # ||z - q||^2 per element: (0.25 + 0 + 0.0625 + 1) / 4
    assert math.isclose(out["commitment"].item(), 1.3125 / 4, rel_tol=1e-6)
    assert math.isclose(out["loss"].item(), 1.25 * 1.3125 / 4, rel_tol=1e-6)  # + codebook term
    torch.testing.assert_close(out["quantized"], torch.tensor([[[0.0, 0.0], [2.0, 0.0]]]))


def test_ema_update_hand_case():
    size = torch.tensor([1.0, 1.0])
    summed = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0]])
    codes = torch.tensor([0, 1, 1])
    new_size, new_sum, book = quantize.ema_update(size, summed, z, codes, decay=0.5, eps=0.0)
    torch.testing.assert_close(new_size, torch.tensor([1.0, 1.5]))  # 0.5*1 + 0.5*{1, 2}
    torch.testing.assert_close(new_sum, torch.tensor([[0.5, 0.0], [5.0, 2.0]]))
    torch.testing.assert_close(book, torch.tensor([[0.5, 0.0], [5.0 / 1.5, 2.0 / 1.5]]))


def test_ema_quantizer_moves_codebook_and_restarts_dead_codes():
    torch.manual_seed(0)
    vq = quantize.VectorQuantizer(4, 2, ema=True, decay=0.5, restart_threshold=0.3)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [-100.0, 0.0], [0.0, -100.0]]))
        vq.embed_sum.copy_(vq.codebook)  # cluster sizes start at 1
    z = torch.full((1, 6, 2), 1.0)
    vq.train()(z)
    # N_0 = 0.5 + 0.5 * 6 = 3.5, m_0 = 0.5 * 0 + 0.5 * 6 = 3: e_0 = 3 / 3.5; others unchanged
    assert torch.allclose(vq.codebook[0], torch.full((2,), 3 / 3.5), atol=1e-3)
    assert torch.allclose(vq.codebook[1], torch.tensor([100.0, 100.0]), atol=1e-2)
    vq(z)  # unused codes decay below the threshold and are restarted on encoder outputs
    assert torch.allclose(vq.codebook[1:], torch.ones(3, 2))


def test_perplexity_hand_case():
    uniform = torch.full((10, 1, 4), 0.25)
    assert math.isclose(quantize.perplexity(uniform).item(), 4.0, rel_tol=1e-5)
    one_code = torch.nn.functional.one_hot(torch.zeros(10, 2, dtype=torch.long), 4).float()
    assert math.isclose(quantize.perplexity(one_code).item(), 2.0, rel_tol=1e-5)  # 1 per group


def test_gumbel_quantizer_differentiable_and_perplexity():
    torch.manual_seed(0)
    gq = quantize.GumbelQuantizer(6, num_codes=4, code_dim=8, groups=2)
    with torch.no_grad():
        gq.logits.weight.zero_()
        gq.logits.bias.zero_()
    x = torch.randn(2, 7, 6)
    out = gq.eval()(x)
    assert math.isclose(out["prob_perplexity"].item(), 8.0, rel_tol=1e-5)  # 4 per group
    assert out["quantized"].shape == (2, 7, 8) and out["codes"].shape == (2, 7, 2)
    torch.nn.init.normal_(gq.logits.weight)
    x.requires_grad_(True)
    out = gq.train()(x)
    (out["quantized"].sum() + out["prob_perplexity"]).backward()
    assert x.grad.abs().sum() > 0 and gq.codebook.grad.abs().sum() > 0
    assert int(gq.step) == 1 and gq.temperature < gq.temp_start


def test_gumbel_quantizer_deep_projection_and_shared_codebook():
    """vq-wav2vec's fairseq recipe: a hidden layer before the logits (--vq-depth 2) and one
    codebook for all groups (--combine-groups): every group's entry comes from that book."""
    torch.manual_seed(0)
    gq = quantize.GumbelQuantizer(6, num_codes=5, code_dim=8, groups=2, proj_depth=2,
                                  shared=True).eval()
    assert gq.codebook.shape == (1, 5, 4) and len(gq.hidden) == 2
    assert gq.hidden[0].out_features == 12 and gq.logits.in_features == 12
    out = gq(torch.randn(3, 7, 6))
    q = out["quantized"].view(3, 7, 2, 4)
    torch.testing.assert_close(q, gq.codebook[0][out["codes"]])
    with pytest.raises(ValueError, match="proj_depth"):
        quantize.GumbelQuantizer(6, num_codes=5, code_dim=8, proj_depth=0)
