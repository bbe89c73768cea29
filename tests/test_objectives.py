"""The pieces of the masked objectives most often wrong in re-implementations (issue 23):
wav2vec 2.0, HuBERT and data2vec score only the masked frames (HuBERT's unmasked term is
off by default), their targets come from the unmasked input, and data2vec's EMA teacher
receives no gradient."""

from __future__ import annotations

import pytest
import torch

from speechssl.upstream import build_upstream

BACKBONE = {"conv_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
            "conv_pos_kernel": 16, "conv_pos_groups": 4, "dropout": 0.0,
            "attention_dropout": 0.0, "feature_dropout": 0.0, "mask_prob": 0.2, "mask_span": 3}
OPTIONS = {"hubert": {**BACKBONE, "final_dim": 16, "num_clusters": 12},
           "wav2vec2": {**BACKBONE, "final_dim": 16, "codebook_size": 8, "num_negatives": 4},
           "data2vec": {**BACKBONE, "top_k": 2}}
MASKED = list(OPTIONS)


def _build(name: str):
    torch.manual_seed(0)
    up = build_upstream(name, **OPTIONS[name])
    if name == "hubert":
        up.set_centroids(torch.randn(12, 39))
    return up


@pytest.fixture(scope="module")
def batch(tiny_corpus):
    from speechssl.data.batching import AudioDataset, collate_audio

    items = tiny_corpus.items("pretrain", "train")[:3]
    b = collate_audio([AudioDataset(items)[i] for i in range(len(items))])
    return b["audio"][:, :16000].contiguous(), torch.full((len(items),), 16000)


def _record(up, monkeypatch) -> dict:
    """Record the mask the loss draws and the student's last layer (gradient kept)."""
    seen: dict = {}
    draw, contextualize = up.backbone.mask, up.backbone.contextualize

    def mask(n, T):
        seen["mask"] = draw(n, T)
        return seen["mask"]

    def student(x, n, mask=None, context=None, **kw):
        layers = contextualize(x, n, mask, context, **kw)
        if mask is not None and context is None:  # the student's pass, not a teacher's
            layers[-1].retain_grad()
            seen["last"] = layers[-1]
        return layers

    monkeypatch.setattr(up.backbone, "mask", mask)
    monkeypatch.setattr(up.backbone, "contextualize", student)
    return seen


@pytest.mark.parametrize("name", MASKED)
def test_the_loss_reads_only_the_masked_frames(name, batch, monkeypatch):
    up = _build(name).train()
    seen = _record(up, monkeypatch)
    torch.manual_seed(1)
    up.pretrain_loss(*batch)["loss"].backward()
    grad = seen["last"].grad.abs().sum(-1)  # (B, T)
    mask = seen["mask"]
    assert mask.any() and (~mask).any()
    assert float(grad[~mask].max()) == 0.0, "an unmasked frame's output reached the loss"
    assert float(grad[mask].min()) > 0.0, "a masked frame's output did not reach the loss"


def test_hubert_unmasked_weight_also_reads_the_unmasked_frames(batch, monkeypatch):
    up = _build("hubert").train()
    up.unmasked_weight = 0.5
    seen = _record(up, monkeypatch)
    torch.manual_seed(1)
    up.pretrain_loss(*batch)["loss"].backward()
    assert float(seen["last"].grad.abs().sum(-1)[~seen["mask"]].min()) > 0.0


def _targets(name: str, up, batch, monkeypatch) -> torch.Tensor:
    """The full (B, T, ...) targets one pretrain_loss call builds."""
    seen = {}
    if name == "hubert":
        original, key = up.targets, "targets"
    elif name == "data2vec":
        original, key = up.targets, "targets"
    else:  # wav2vec 2.0: the quantized (unmasked) features are the positives
        original, key = up.quantizer.forward, None

    def record(*args, **kwargs):
        out = original(*args, **kwargs)
        seen["t"] = out if key else out["quantized"]
        return out

    if key:
        monkeypatch.setattr(up, key, record)
    else:
        monkeypatch.setattr(up.quantizer, "forward", record)
    up.pretrain_loss(*batch)
    return seen["t"].detach()


@pytest.mark.parametrize("name", MASKED)
def test_targets_come_from_the_unmasked_input(name, batch, monkeypatch):
    """Two different masks, the same targets at every frame (eval mode: no dropout, the
    quantizer's argmax)."""
    up = _build(name).eval()
    torch.manual_seed(1)
    a = _targets(name, up, batch, monkeypatch)
    torch.manual_seed(2)
    b = _targets(name, up, batch, monkeypatch)
    assert torch.equal(a, b)


def test_data2vec_teacher_gets_no_gradient_and_moves_only_by_ema(batch):
    up = _build("data2vec").train()
    before = [p.detach().clone() for p in up.teacher.parameters()]
    torch.manual_seed(1)
    up.pretrain_loss(*batch)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in up.teacher.parameters())
    torch.optim.SGD([p for p in up.parameters() if p.requires_grad], lr=0.1).step()
    assert all(torch.equal(p, q) for p, q in zip(up.teacher.parameters(), before, strict=True))
    up.after_step(1)  # the EMA update moves it towards the student
    assert any(not torch.equal(p, q) for p, q in zip(up.teacher.parameters(), before, strict=True))
