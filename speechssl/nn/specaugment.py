"""SpecAugment (Park et al., 2019, "SpecAugment: A Simple Data Augmentation Method for
Automatic Speech Recognition") on frame features, as s3prl's ASR and SF probes apply it to
the upstream features while training: a time warp, time masks and feature (frequency)
masks, masked values set to 0. Defaults: s3prl's asr/config.yaml (ec8064b5): warp window
5, 2 time masks of 0-40 frames, 4 feature masks of 0-50 dimensions (its warp is bicubic, this
one linear)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def time_warp(x: Tensor, window: int) -> Tensor:
    """(T, D) -> (T, D): the frame at a random centre c (window <= c < T - window) moves to a
    random w in [c - window, c + window); both sides are resampled linearly to fit."""
    T = x.shape[0]
    if window < 1 or T <= 2 * window + 1:
        return x
    c = int(torch.randint(window, T - window, ()))
    w = int(torch.randint(c - window, c + window, ())) + 1
    left = F.interpolate(x[:c].T[None], size=w, mode="linear", align_corners=False)[0].T
    right = F.interpolate(x[c:].T[None], size=T - w, mode="linear", align_corners=False)[0].T
    return torch.cat([left, right])


def mask_spans(x: Tensor, dim: int, count: int, max_width: int) -> Tensor:
    """``count`` spans of width U{0..max_width} at uniform positions along ``dim`` (0: time,
    1: feature) of the (T, D) ``x`` set to 0 (a span never runs past the end); a product with
    a 0/1 mask, so the gradient reaches the unmasked values."""
    size = x.shape[dim]
    keep = torch.ones(size, device=x.device, dtype=x.dtype)
    for _ in range(count):
        width = int(torch.randint(0, min(max_width, size) + 1, ()))
        if width:
            start = int(torch.randint(0, size - width + 1, ()))
            keep[start:start + width] = 0
    return x * (keep[:, None] if dim == 0 else keep[None, :])


class SpecAugment(nn.Module):
    """(B, T, D) features and (B,) valid lengths -> augmented features, in training mode
    only (the identity in eval). Each utterance is warped and masked within its valid
    frames; padding stays as it was."""

    def __init__(self, warp_window: int = 5, time_masks: int = 2, max_time_width: int = 40,
                 freq_masks: int = 4, max_freq_width: int = 50):
        super().__init__()
        self.warp_window, self.time_masks, self.max_time_width = warp_window, time_masks, max_time_width
        self.freq_masks, self.max_freq_width = freq_masks, max_freq_width

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.training:
            return x
        out = []
        for b in range(x.shape[0]):
            n = int(lengths[b])
            y = time_warp(x[b, :n], self.warp_window)
            y = mask_spans(y, 0, self.time_masks, self.max_time_width)
            y = mask_spans(y, 1, self.freq_masks, self.max_freq_width)
            out.append(torch.cat([y, x[b, n:]]))
        return torch.stack(out)
