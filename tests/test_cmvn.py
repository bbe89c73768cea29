"""Input normalisation of the fbank-based upstreams: utterance vs global CMVN."""

from __future__ import annotations

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.nn.frontend import GlobalCMVN, LogMel
from speechssl.upstream.base import build_upstream


def _batches(g):
    """Two padded batches of (B, T, 3) features with their lengths."""
    a = torch.randn(2, 7, 3, generator=g) * 4 + 10
    b = torch.randn(3, 5, 3, generator=g) * 2 - 1
    la, lb = torch.tensor([7, 4]), torch.tensor([5, 5, 2])
    for x, n in ((a, la), (b, lb)):
        x[torch.arange(x.shape[1])[None] >= n[:, None]] = 0.0
    return (a, la), (b, lb)


def test_global_cmvn_statistics_are_those_of_all_valid_frames():
    g = torch.Generator().manual_seed(0)
    (a, la), (b, lb) = _batches(g)
    norm = GlobalCMVN(3).train()
    norm(a, la)
    norm(b, lb)
    frames = torch.cat([a[0, :7], a[1, :4], b[0, :5], b[1, :5], b[2, :2]]).double()
    assert norm.count.item() == frames.shape[0] == 23
    mean, std = frames.mean(0), frames.std(0, unbiased=False)
    torch.testing.assert_close(norm.total / norm.count, mean)
    norm.eval()
    out = norm(a, la)
    expected = (a[0, :7].double() - mean) / (std + 1e-5)
    torch.testing.assert_close(out[0, :7].double(), expected, rtol=1e-5, atol=1e-5)
    assert (out[1, 4:] == 0).all(), "padding stays zero"
    assert norm.count.item() == 23, "eval mode does not update the statistics"


def test_global_cmvn_is_identity_before_training_and_travels_in_state_dict():
    g = torch.Generator().manual_seed(1)
    (a, la), _ = _batches(g)
    norm = GlobalCMVN(3).eval()
    assert torch.equal(norm(a, la), a)
    norm.train()(a, la)
    other = GlobalCMVN(3)
    other.load_state_dict(norm.state_dict())
    other.eval(), norm.eval()
    assert torch.equal(other(a, la), norm(a, la))


def test_global_cmvn_keeps_the_utterance_mean_that_utterance_cmvn_removes():
    g = torch.Generator().manual_seed(2)
    wavs = torch.randn(2, 16000, generator=g) * torch.tensor([[0.01], [0.3]])
    lengths = torch.tensor([16000, 16000])
    utt = LogMel(80, "utterance")
    glob = LogMel(80, "global").train()
    glob(wavs, lengths)
    glob.eval()
    u, _ = utt(wavs, lengths)
    v, _ = glob(wavs, lengths)
    assert u.mean(1).abs().max() < 1e-4  # every utterance's mean is gone
    assert (v[1].mean(0) - v[0].mean(0)).abs().mean() > 0.5  # level difference survives


def test_bad_cmvn_value_names_the_choices():
    with pytest.raises(ConfigError, match="utterance, global, none"):
        LogMel(80, "batch")


@pytest.mark.parametrize("name", ["apc", "vq_apc", "npc", "mockingjay", "tera", "vqvae"])
def test_every_logmel_upstream_takes_cmvn(name):
    model = build_upstream(name, cmvn="global")
    assert isinstance(model.frontend.global_cmvn, GlobalCMVN)
    assert any(k.endswith("global_cmvn.count") for k in model.state_dict())
