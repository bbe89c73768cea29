"""Upstream interface: registry, output shapes, downsample rates, APC's loss."""

from __future__ import annotations

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream, registered_upstreams
from speechssl.upstream.apc import apc_l1_loss


@pytest.mark.parametrize("name,dim,layers", [("fbank", 80, 1), ("mfcc", 13, 1),
                                             ("spectrogram", 257, 1), ("apc", 512, 3)])
def test_shapes_and_downsample_rate(name, dim, layers):
    up = build_upstream(name).eval()
    wavs = torch.randn(3, 32000) * 0.1
    lengths = torch.tensor([32000, 16000, 8001])
    out = up(wavs, lengths)
    assert len(out.hidden_states) == layers
    for h in out.hidden_states:
        assert h.shape == (3, int(out.lengths.max()), dim)
    # one frame per downsample_rate samples (Kaldi framing loses the last partial window)
    expected = 1 + (lengths - 400) // up.downsample_rate
    assert out.lengths.tolist() == expected.tolist()
    assert up.downsample_rate == 160


def test_padding_does_not_change_features():
    up = build_upstream("apc").eval()
    wav = torch.randn(1, 16000) * 0.1
    alone = up(wav, torch.tensor([16000])).hidden_states[-1]
    padded = torch.cat([wav, torch.zeros(1, 8000)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 24000) * 0.1])
    together = up(batch, torch.tensor([16000, 24000])).hidden_states[-1]
    assert torch.allclose(alone[0], together[0, : alone.shape[1]], atol=1e-5)


def test_registry_and_bad_options():
    assert {"fbank", "mfcc", "spectrogram", "apc"} <= set(registered_upstreams())
    with pytest.raises(ConfigError, match="valid options: .*hidden_size"):
        build_upstream("apc", hiden_size=3)
    with pytest.raises(ConfigError, match="registered upstreams"):
        build_upstream("nope")


def test_apc_l1_loss_hand_case():
    # target frames 0..4 with value t; predicting 2 ahead perfectly gives zero loss
    target = torch.arange(5.0).view(1, 5, 1)
    pred = target + 2
    assert apc_l1_loss(pred, target, torch.tensor([5]), n_future=2).item() == 0.0
    # off by one everywhere -> mean absolute error 1; padding beyond the length is ignored
    assert apc_l1_loss(pred + 1, target, torch.tensor([5]), 2).item() == pytest.approx(1.0)
    pred[0, 2:] = 100.0  # frames 2,3 only pair with 4,5 (>= length 4): not counted
    assert apc_l1_loss(pred, target, torch.tensor([4]), 2).item() == pytest.approx(0.0)


def test_apc_only_predicts_from_the_past():
    # the GRU stack is causal: changing frames from t on leaves frames before t alone
    # (the utterance CMVN of the input features is, by design, not causal)
    up = build_upstream("apc", hidden_size=32, dropout=0.0).eval()
    feats = torch.randn(1, 50, 80)
    changed = feats.clone()
    changed[0, 30:] = torch.randn(20, 80)
    h1 = up._layers(feats, torch.tensor([50]))[-1]
    h2 = up._layers(changed, torch.tensor([50]))[-1]
    assert torch.allclose(h1[0, :30], h2[0, :30], atol=1e-6)
    assert not torch.allclose(h1[0, 30:], h2[0, 30:])


def test_apc_loss_falls_on_tiny_corpus(clips):
    torch.manual_seed(0)
    up = build_upstream("apc", hidden_size=128)
    opt = torch.optim.Adam(up.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = up.pretrain_loss(*clips)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses  # about 0.62 x on the four clips
