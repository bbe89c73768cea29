"""Span, replacement, channel and noise masking (speechssl/nn/masking.py)."""

from __future__ import annotations

import torch

from speechssl.nn import masking


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    runs, n = [], 0
    for v in row.tolist() + [False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_span_mask_ratio_close_to_target():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([200, 350, 120, 500])
    fractions = [masking.span_mask(lengths, 0.15, 7, g).sum().item() / lengths.sum().item()
                 for _ in range(50)]
    assert abs(sum(fractions) / len(fractions) - 0.15) < 0.01


def test_span_mask_spans_are_whole_and_never_touch_padding():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([300, 140, 71])
    for _ in range(20):
        mask = masking.span_mask(lengths, 0.15, 7, g)
        for b, n in enumerate(lengths.tolist()):
            assert not mask[b, n:].any()
            assert all(r % 7 == 0 for r in _runs(mask[b])), _runs(mask[b])
            assert int(mask[b].sum()) == 7 * round(0.15 * n / 7)


def test_span_mask_short_sequences_and_determinism():
    lengths = torch.tensor([3, 40])
    a = masking.span_mask(lengths, 0.5, 7, torch.Generator().manual_seed(5), min_spans=1)
    b = masking.span_mask(lengths, 0.5, 7, torch.Generator().manual_seed(5), min_spans=1)
    assert torch.equal(a, b)
    assert a[0, :3].all()  # span cut to the sequence length
    c = masking.span_mask(lengths, 0.5, 7, torch.Generator().manual_seed(6), min_spans=1)
    assert not torch.equal(a, c)


def test_replacement_split_80_10_10():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(64, 500, generator=g) < 0.5
    fill, rand = masking.split_replacement(mask, g)
    n = mask.sum().item()
    assert not (fill & rand).any() and not (fill & ~mask).any() and not (rand & ~mask).any()
    assert abs(fill.sum().item() / n - 0.8) < 0.01
    assert abs(rand.sum().item() / n - 0.1) < 0.01


def test_replace_frames_touches_only_selected_frames():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([30, 20])
    x = torch.randn(2, 30, 4, generator=g) + 5.0
    x[1, 20:] = 0.0
    mask = masking.span_mask(lengths, 0.3, 3, g)
    fill, rand = masking.split_replacement(mask, g, 0.5, 0.5)
    y = masking.replace_frames(x, lengths, fill, rand, g)
    assert torch.equal(y[~mask], x[~mask])
    assert (y[fill] == 0).all()
    for b, t in rand.nonzero().tolist():  # a random frame comes from the same valid sequence
        assert any(torch.equal(y[b, t], x[b, s]) for s in range(int(lengths[b])))
    vec = torch.arange(4.0)
    z = masking.replace_frames(x, lengths, fill, torch.zeros_like(rand), g, fill_value=vec)
    assert torch.equal(z[fill], vec.expand(int(fill.sum()), 4))


def test_channel_mask_is_one_band_within_width():
    g = torch.Generator().manual_seed(0)
    m = masking.channel_mask(500, 80, 20, g)
    widths = m.sum(1)
    assert widths.max() <= 20 and widths.min() == 0
    assert all(len(_runs(row)) <= 1 for row in m)
    assert abs(widths.float().mean().item() - 10) < 1.0


def test_noise_only_on_chosen_valid_frames():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([10, 6])
    x = torch.zeros(2, 10, 3)
    y = masking.add_noise(x, lengths, torch.tensor([True, True]), 0.2, g)
    assert (y[0] != 0).all() and (y[1, :6] != 0).all() and (y[1, 6:] == 0).all()
    y = masking.add_noise(x, lengths, torch.tensor([False, True]), 0.2, g)
    assert (y[0] == 0).all()
    which = masking.noise_mask(10000, 0.1, g)
    assert abs(which.float().mean().item() - 0.1) < 0.01
