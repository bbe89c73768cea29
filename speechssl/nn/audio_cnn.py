"""BYOL-A's audio encoder (Niizumi et al., 2021, "BYOL for Audio: Self-Supervised Learning
for General-Purpose Audio Representation"; its "AudioNTT2020" network, also DeLoRes-S's):
three conv blocks (3x3 conv, batch norm, ReLU, 2x2 max pooling) on a log-mel segment, the
channels x remaining mel bins of each frame flattened, then two fully connected layers
(ReLU, dropout between); the clip embedding is the max plus the mean over time of the last."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask


class AudioNTT(nn.Module):
    """(B, T, mel_bins) log-mel -> two (B, T', dim) frame layers, T' = T // prod(time_pool).

    ``time_pool``: the max-pooling factor along time of each block (BYOL-A: 2, 2, 2, that
    is 80-ms frames; frequency is always pooled by 2)."""

    def __init__(self, mel_bins: int = 64, channels: int = 64, dim: int = 2048,
                 dropout: float = 0.3, time_pool: list[int] = (2, 2, 2)):
        super().__init__()
        if len(time_pool) != 3 or any(int(p) < 1 for p in time_pool):
            raise ConfigError(f"upstream.time_pool={list(time_pool)}: three factors >= 1")
        if mel_bins < 8 or mel_bins % 8:
            raise ConfigError(f"upstream.mel_bins={mel_bins}: a multiple of 8 (three 2x "
                              f"poolings along frequency)")
        blocks, c_in = [], 1
        for p in time_pool:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, channels, 3, padding=1),
                                        nn.BatchNorm2d(channels), nn.ReLU(),
                                        nn.MaxPool2d((int(p), 2))))
            c_in = channels
        self.blocks = nn.ModuleList(blocks)
        self.time_pool = [int(p) for p in time_pool]
        self.fc1 = nn.Linear(channels * (mel_bins // 8), dim)
        self.fc2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def stride(self) -> int:
        """Input frames per output frame."""
        out = 1
        for p in self.time_pool:
            out *= p
        return out

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for p in self.time_pool:
            lengths = torch.div(lengths, p, rounding_mode="floor")
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """x: (B, T, F), zero past each length -> ([fc1 (B, T', dim), fc2 (B, T', dim)],
        (B,) frames), zero at padded frames. A sequence shorter than the stride gives no
        frame (length 0)."""
        h, n = x.unsqueeze(1), lengths
        for block, p in zip(self.blocks, self.time_pool, strict=True):
            # padded frames are zero before every conv, as past the end of an unpadded input
            h = block(h * valid_mask(n, h.shape[2])[:, None, :, None].to(h.dtype))
            n = torch.div(n, p, rounding_mode="floor").clamp(max=h.shape[2])
        h = h.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
        keep = valid_mask(n, h.shape[1]).unsqueeze(-1).to(h.dtype)
        h1 = torch.relu(self.fc1(h)) * keep
        h2 = torch.relu(self.fc2(self.dropout(h1))) * keep
        return [h1, h2], n


def max_plus_mean(h: Tensor, lengths: Tensor) -> Tensor:
    """BYOL-A's clip embedding: (B, T, D) -> max over valid frames + mean over them, (B, D)."""
    valid = valid_mask(lengths, h.shape[1]).unsqueeze(-1)
    mean = (h * valid).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)
    peak = h.masked_fill(~valid, float("-inf")).amax(1)
    return peak.masked_fill(lengths.unsqueeze(-1) == 0, 0.0) + mean


def mlp(dims: list[int], norm: bool = True) -> nn.Sequential:
    """BYOL's projector / predictor (and the Barlow Twins / VICReg expander): Linear, then
    (BatchNorm1d, ReLU, Linear) for each further width."""
    layers: list[nn.Module] = [nn.Linear(dims[0], dims[1])]
    for a, b in zip(dims[1:-1], dims[2:], strict=True):
        layers += [nn.BatchNorm1d(a) if norm else nn.Identity(), nn.ReLU(), nn.Linear(a, b)]
    return nn.Sequential(*layers)
