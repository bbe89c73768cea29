"""SpecAugment of probe features (speechssl/nn/specaugment.py; s3prl's ASR and SF probes)."""

from __future__ import annotations

import torch

from speechssl.nn.specaugment import SpecAugment, mask_spans, time_warp


def test_masks_zero_whole_spans_within_their_width():
    torch.manual_seed(0)
    x = torch.ones(100, 60)
    for _ in range(20):
        t = mask_spans(x, 0, count=2, max_width=40)
        rows = (t == 0).all(1)
        assert int(rows.sum()) <= 80 and ((t == 0).any(1) == rows).all()  # whole frames
        f = mask_spans(x, 1, count=4, max_width=50)
        cols = (f == 0).all(0)
        assert int(cols.sum()) <= 60 and ((f == 0).any(0) == cols).all()  # whole dimensions
    y = torch.ones(5, 3, requires_grad=True)
    mask_spans(y, 0, count=1, max_width=5).sum().backward()  # a product: gradients flow
    assert set(y.grad.unique().tolist()) <= {0.0, 1.0}


def test_time_warp_keeps_the_length_and_the_ends():
    torch.manual_seed(1)
    x = torch.arange(50, dtype=torch.float32)[:, None].repeat(1, 4)
    w = time_warp(x, window=5)
    assert w.shape == x.shape
    assert torch.all(w[1:] >= w[:-1] - 1e-5)  # a monotone ramp stays monotone
    assert w[0, 0] <= 1.0 and w[-1, 0] >= 48.0
    assert torch.equal(time_warp(x[:8], window=5), x[:8])  # too short to warp


def test_specaugment_trains_only_and_leaves_padding():
    torch.manual_seed(2)
    aug = SpecAugment()
    x, lengths = torch.randn(3, 120, 80), torch.tensor([120, 70, 30])
    assert torch.equal(aug.eval()(x, lengths), x)
    y = aug.train()(x, lengths)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(y[1, 70:], x[1, 70:]) and torch.equal(y[2, 30:], x[2, 30:])


def test_asr_and_sf_probes_take_the_option():
    from downstream.base import build_task

    for name in ("asr", "sf"):
        task = build_task(name, specaugment=True)
        task.vocab = ["<blank>", "a", "b"]
        probe = task.build_probe(8)
        assert isinstance(probe.specaug, SpecAugment)
        assert build_task(name).probe_options["specaugment"] is False


def test_an_asr_cell_with_specaugment_runs(make_cfg):
    from speechssl.train import train_cell

    row = train_cell(make_cfg("upstream=fbank", "downstream=asr", "downstream.specaugment=true",
                              "downstream.optim.max_steps=2", "downstream.optim.eval_every=2"))
    assert row["task"] == "asr" and row["test_value"] >= 0.0
