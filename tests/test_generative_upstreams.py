"""Generative and VQ upstreams (Issue 3): mockingjay, tera, npc, vq_apc, vqvae."""

from __future__ import annotations

import pytest
import torch

from speechssl.checkpoint import load_weights, save_weights
from speechssl.upstream import build_upstream

TINY = {
    "mockingjay": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "ff_size": 128,
                   "dropout": 0.0},
    "tera": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "ff_size": 128, "dropout": 0.0},
    "npc": {"hidden_size": 64, "num_layers": 2, "kernel_size": 9, "mask_size": 3,
            "dropout": 0.0},
    "vq_apc": {"hidden_size": 64, "num_layers": 2, "codebook_size": 32, "vq_layer": 0,
               "dropout": 0.0},
    "vqvae": {"hidden_size": 64, "strides": [1, 1], "codebook_size": 32},
}
LR = {"mockingjay": 2e-3, "tera": 2e-3, "npc": 1e-3, "vq_apc": 5e-3, "vqvae": 2e-3}
STEPS = {"mockingjay": 60, "tera": 60, "npc": 30, "vq_apc": 30, "vqvae": 30}


@pytest.fixture(scope="module")
def tiny_batch(tiny_corpus):
    from speechssl.data.batching import AudioDataset, collate_audio

    items = tiny_corpus.items("pretrain", "train")[:8]
    return collate_audio([AudioDataset(items)[i] for i in range(len(items))])


def _fixed_loss(up, batch) -> float:
    """The loss with the random masks / Gumbel noise drawn from one fixed seed."""
    torch.manual_seed(123)
    with torch.no_grad():
        return up.pretrain_loss(batch["audio"], batch["lengths"])["loss"].item()


@pytest.mark.parametrize("name", sorted(TINY))
def test_loss_falls_on_tiny_corpus(name, tiny_batch):
    torch.manual_seed(0)
    up = build_upstream(name, **TINY[name]).train()
    before = _fixed_loss(up, tiny_batch)
    opt = torch.optim.Adam(up.parameters(), lr=LR[name])
    losses = []
    for _ in range(STEPS[name]):
        out = up.pretrain_loss(tiny_batch["audio"], tiny_batch["lengths"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert _fixed_loss(up, tiny_batch) < 0.8 * before, losses


@pytest.mark.parametrize("name", sorted(TINY))
def test_checkpoint_reloads_to_identical_outputs(name, tiny_batch, tmp_path):
    torch.manual_seed(0)
    up = build_upstream(name, **TINY[name])
    up.train().pretrain_loss(tiny_batch["audio"][:2], tiny_batch["lengths"][:2])["loss"].backward()
    save_weights(tmp_path / "w.safetensors", up)
    torch.manual_seed(1)
    again = build_upstream(name, **TINY[name])
    load_weights(tmp_path / "w.safetensors", again)
    x, n = tiny_batch["audio"][:2], tiny_batch["lengths"][:2]
    with torch.no_grad():
        a, b = up.eval()(x, n), again.eval()(x, n)
    for h, k in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(h, k)


def test_mockingjay_stacks_frames():
    up = build_upstream("mockingjay", **TINY["mockingjay"], downsample=3).eval()
    assert up.downsample_rate == 480
    out = up(torch.randn(1, 16000) * 0.1, torch.tensor([16000]))
    assert int(out.lengths[0]) == 33  # ceil(98 frames / 3)
    assert len(out.hidden_states) == 3  # input embedding + 2 layers


def test_tera_alterations_switch_off():
    up = build_upstream("tera", **TINY["tera"], time_mask_ratio=0.0, channel_mask_width=0,
                        noise_prob=0.0)
    x, n = torch.randn(2, 50, 80), torch.tensor([50, 30])
    x[1, 30:] = 0.0  # padding is zero
    y, altered = up.alter(x, n, torch.Generator().manual_seed(0))
    assert torch.equal(x, y) and not altered.any()
    up = build_upstream("tera", **TINY["tera"], time_mask_ratio=0.0, channel_mask_width=20,
                        noise_prob=0.0)
    y, altered = up.alter(x, n, torch.Generator().manual_seed(0))
    assert torch.equal(y[~altered], x[~altered]) and not altered[1, 30:].any()


def test_npc_prediction_never_sees_the_masked_window():
    torch.manual_seed(0)
    up = build_upstream("npc", hidden_size=16, num_layers=3, kernel_size=11, mask_size=3).eval()
    feats = torch.randn(1, 40, 80, requires_grad=True)
    rep = up._layers(feats, torch.tensor([40]))[-1]
    rep[0, 20].sum().backward()
    seen = feats.grad[0].abs().sum(-1) > 0
    assert not seen[19:22].any()  # frame 20 and one neighbour each side (mask_size 3)
    assert seen[18] and seen[22]


def test_npc_masked_conv_equals_a_conv_with_a_zeroed_centre():
    from speechssl.upstream.npc import MaskedConv

    torch.manual_seed(0)
    conv = MaskedConv(3, 4, radius=2, reach=3)
    x = torch.randn(2, 3, 17)
    hole = torch.zeros(4, 3, 5)  # the 2 * radius + 1 centre taps, as the reference code masks them
    kernel = torch.cat([conv.left, hole, conv.right], dim=-1)  # width 11
    ref = torch.nn.functional.conv1d(x, kernel, conv.bias, padding=5)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert conv(x[..., :4]).shape == (2, 4, 4)  # shorter than the kernel


def test_npc_batch_norm_statistics_ignore_padding():
    from speechssl.upstream.npc import _batch_norm

    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(4).train()
    x = torch.randn(2, 4, 10)
    lengths = torch.tensor([10, 6])
    x[1, :, 6:] = 100.0  # padding must not enter the statistics
    valid = torch.arange(10)[None] < lengths[:, None]
    out = _batch_norm(norm, x, valid)
    frames = torch.cat([x[0].T, x[1, :, :6].T])  # the 16 valid frames
    ref = torch.nn.functional.batch_norm(frames, None, None, training=True, eps=norm.eps)
    assert torch.allclose(torch.cat([out[0].T, out[1, :, :6].T]), ref, atol=1e-5)
    assert (out[1, :, 6:] == 0).all()


def test_npc_config_errors_name_the_setting():
    from speechssl.errors import ConfigError

    with pytest.raises(ConfigError, match="kernel_size=9"):
        build_upstream("npc", num_layers=4, kernel_size=9, mask_size=5)
    with pytest.raises(ConfigError, match="odd"):
        build_upstream("npc", kernel_size=14)


def test_vq_apc_logs_code_usage():
    up = build_upstream("vq_apc", **TINY["vq_apc"])
    out = up.pretrain_loss(torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000]))
    assert 1.0 <= out["code_perplexity"].item() <= 32.0
    codes, n = up.eval().codes(torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000]))
    assert codes.shape == (2, int(n.max()), 1) and int(codes.max()) < 32


def test_vqvae_codes():
    up = build_upstream("vqvae", **TINY["vqvae"]).eval()
    codes, n = up.codes(torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000]))
    assert codes.dtype == torch.long and codes.shape == (2, int(n.max()))
    assert (codes[1, int(n[1]):] == -1).all() and (codes[0] >= 0).all() and int(codes.max()) < 32
