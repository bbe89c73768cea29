"""Span, replacement and channel masking: Devlin et al., 2019, "BERT: Pre-training of Deep
Bidirectional Transformers for Language Understanding" (80/10/10), as used on speech frames by
Liu et al., 2020, "Mockingjay" and Liu et al., 2021, "TERA" (spans, channels, noise).

Pure functions on right-padded batches; every random choice comes from the caller's
``torch.Generator``, so a fixed generator gives a fixed mask. Reused by wav2vec 2.0 / HuBERT.
"""

from __future__ import annotations

import torch
from torch import Tensor


def valid_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool, True at real (non-padding) frames."""
    T = int(lengths.max()) if max_len is None else max_len
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def span_mask(lengths: Tensor, ratio: float, span: int, generator: torch.Generator,
              max_len: int | None = None, min_spans: int = 0) -> Tensor:
    """Mask ``round(ratio * n / span)`` non-overlapping spans of ``span`` frames per sequence.

    lengths: (B,) valid frames. Returns (B, T) bool, True = masked; padding is never
    masked. Span starts are uniform over all non-overlapping placements, so exactly
    ``k * span`` frames are masked (``span`` is cut to ``n`` for sequences shorter than it).
    """
    T = int(lengths.max()) if max_len is None else max_len
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        s = max(1, min(span, n))
        k = min(max(int(round(ratio * n / s)), min_spans), n // s)
        if k == 0:
            continue
        slots = n - k * (s - 1)  # choose k distinct slots, then spread them apart by s - 1
        pos = torch.randperm(slots, generator=generator)[:k].sort().values
        starts = pos + torch.arange(k) * (s - 1)
        idx = (starts.unsqueeze(1) + torch.arange(s)).flatten()
        mask[b, idx] = True
    return mask.to(lengths.device)


def split_replacement(mask: Tensor, generator: torch.Generator, zero_prob: float = 0.8,
                      random_prob: float = 0.1) -> tuple[Tensor, Tensor]:
    """Split the selected frames BERT-style: (B, T) bool -> (to_fill, to_randomize).

    Each selected frame independently goes to ``to_fill`` with ``zero_prob``, to
    ``to_randomize`` with ``random_prob``, and is kept as it is otherwise.
    """
    u = torch.rand(mask.shape, generator=generator).to(mask.device)
    fill = mask & (u < zero_prob)
    rand = mask & (u >= zero_prob) & (u < zero_prob + random_prob)
    return fill, rand


def replace_frames(x: Tensor, lengths: Tensor, fill: Tensor, rand: Tensor,
                   generator: torch.Generator, fill_value: Tensor | float = 0.0) -> Tensor:
    """x: (B, T, D). Frames in ``fill`` (B, T) become ``fill_value`` (a scalar or a (D,)
    vector, e.g. a learned mask embedding); frames in ``rand`` become random valid frames
    of the same sequence. Other frames are returned untouched (a new tensor)."""
    B, T, _ = x.shape
    src = torch.rand(B, T, generator=generator).to(x.device)
    src = (src * lengths.clamp(min=1).unsqueeze(1)).long()  # a random valid index per frame
    shuffled = x.gather(1, src.unsqueeze(-1).expand_as(x))
    out = torch.where(rand.unsqueeze(-1), shuffled, x)
    fill_value = torch.as_tensor(fill_value, dtype=x.dtype, device=x.device)
    return torch.where(fill.unsqueeze(-1), fill_value.expand_as(x), out)


def channel_mask(batch: int, num_channels: int, max_width: int,
                 generator: torch.Generator) -> Tensor:
    """One contiguous band per sequence, of width uniform in [0, max_width]:
    (B, D) bool, True = channel to zero."""
    width = torch.randint(0, max_width + 1, (batch,), generator=generator)
    start = (torch.rand(batch, generator=generator) * (num_channels - width + 1)).long()
    c = torch.arange(num_channels).unsqueeze(0)
    return (c >= start.unsqueeze(1)) & (c < (start + width).unsqueeze(1))


def noise_mask(batch: int, prob: float, generator: torch.Generator) -> Tensor:
    """(B,) bool: which sequences receive magnitude (Gaussian noise) alteration."""
    return torch.rand(batch, generator=generator) < prob


def add_noise(x: Tensor, lengths: Tensor, which: Tensor, std: float,
              generator: torch.Generator) -> Tensor:
    """x + N(0, std^2) on the valid frames of the sequences in ``which`` (B,) bool."""
    noise = torch.randn(x.shape, generator=generator).to(x.device) * std
    keep = (valid_mask(lengths, x.shape[1]) & which.to(x.device).unsqueeze(1)).unsqueeze(-1)
    return x + noise * keep


def wav2vec2_mask(lengths: Tensor, prob: float, span: int, generator: torch.Generator,
                  max_len: int | None = None, min_spans: int = 2) -> Tensor:
    """Time masking of Baevski et al., 2020, "wav2vec 2.0" (also HuBERT, data2vec).

    Each sequence of ``n`` valid frames gets ``int(prob * n + u)`` span starts (u uniform in
    [0, 1); at least ``min_spans``), drawn without replacement from the ``n - span + 1``
    possible starts; the ``span`` frames from each start are masked and spans may overlap,
    so about 1 - (1 - prob) ** span of the frames end up masked (49 % for the paper's
    p = 0.065, span 10; fairseq writes p as mask_prob = p * span = 0.65).
    Returns (B, T) bool, True = masked; padding is never masked.
    """
    T = int(lengths.max()) if max_len is None else max_len
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        s = max(1, min(span, n))
        if n == 0 or prob <= 0:
            continue
        u = float(torch.rand((), generator=generator))
        starts_possible = n - s + 1
        k = min(max(int(prob * n + u), min_spans), starts_possible)
        starts = torch.randperm(starts_possible, generator=generator)[:k]
        idx = (starts.unsqueeze(1) + torch.arange(s)).flatten()
        mask[b, idx] = True
    return mask.to(lengths.device)
