"""NPC: Liu, Chung and Glass, 2021, "Non-Autoregressive Predictive Coding for Learning Speech
Representations from Local Dependencies".

``num_layers`` conv blocks over log-mel frames, as in the paper and its reference code: a
kernel-3 conv, batch norm, ReLU, a 1x1 conv, batch norm, dropout, a residual connection (from
the second block on) and ReLU. Block i (from 0) sees i + 1 frames on each side of frame t,
so a masked conv of width ``kernel_size`` reads its output with a centre hole of
``mask_size + 2 (i + 1)`` frames (tanh after it): the sum of the masked convs never depends
on the input frames t - mask_size//2 .. t + mask_size//2. That sum is the representation; a
linear layer predicts frame t from it (L1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.conv_encoder import unpadded
from speechssl.nn.frontend import HOP_SAMPLES, LogMel
from speechssl.nn.masking import valid_mask
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


class MaskedConv(nn.Module):
    """Conv1d (B, C_in, T) -> (B, C_out, T) that never reads frames within ``radius`` of the
    centre: ``reach`` learned taps on each side of the hole, run as two convolutions over
    shifted inputs (no multiplications by the hole's zeros). Initialised as nn.Conv1d of the
    full width ``2 (radius + reach) + 1``."""

    def __init__(self, in_dim: int, out_dim: int, radius: int, reach: int):
        super().__init__()
        self.radius, self.reach = radius, reach
        bound = 1.0 / math.sqrt(in_dim * (2 * (radius + reach) + 1))
        self.left = nn.Parameter(torch.empty(out_dim, in_dim, reach).uniform_(-bound, bound))
        self.right = nn.Parameter(torch.empty(out_dim, in_dim, reach).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        T, side = x.shape[-1], self.radius + self.reach
        # output t reads x[t - side .. t - radius - 1] and x[t + radius + 1 .. t + side]
        left = F.conv1d(F.pad(x, (side, 0))[..., :T + self.reach - 1], self.left)
        right = F.conv1d(F.pad(x, (0, side))[..., self.radius + 1:], self.right, self.bias)
        return left + right


def _batch_norm(norm: nn.BatchNorm1d, x: Tensor, valid: Tensor | None) -> Tensor:
    """Batch norm of (B, C, T) whose training statistics count valid frames only."""
    if valid is None or not norm.training:
        return norm(x)
    frames = x.transpose(1, 2)
    out = torch.zeros_like(frames)
    out[valid] = norm(frames[valid])
    return out.transpose(1, 2)


class ConvBlock(nn.Module):
    """conv3 -> BN -> ReLU -> conv1x1 -> BN -> dropout (-> + input) -> ReLU; (B, C, T)."""

    def __init__(self, in_dim: int, dim: int, residual: bool, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, dim, 3, padding=1)
        self.linear = nn.Conv1d(dim, dim, 1)
        self.norm1, self.norm2 = nn.BatchNorm1d(dim), nn.BatchNorm1d(dim)
        self.drop, self.residual = nn.Dropout(dropout), residual

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        y = torch.relu(_batch_norm(self.norm1, self.conv(x), valid))
        y = self.drop(_batch_norm(self.norm2, self.linear(y), valid))
        return torch.relu(y + x if self.residual else y)


@register_upstream("npc")
class NPC(Upstream):
    """Hidden states: every block output and the masked-sum representation (the paper's
    feature), all ``hidden_size`` wide. Padded frames are zeroed between layers."""

    downsample_rate = HOP_SAMPLES

    def __init__(self, input_dim: int = 80, hidden_size: int = 512, num_layers: int = 4,
                 kernel_size: int = 15, mask_size: int = 5, dropout: float = 0.1,
                 residual: bool = True, cmvn: str = "utterance"):
        super().__init__()
        if kernel_size % 2 == 0 or mask_size % 2 == 0:
            raise ConfigError(f"upstream.kernel_size={kernel_size} and "
                              f"upstream.mask_size={mask_size} must be odd")
        if kernel_size < mask_size + 2 * num_layers + 2:
            raise ConfigError(
                f"upstream.kernel_size={kernel_size} leaves the last masked conv no taps: it "
                f"must be >= mask_size + 2 * num_layers + 2 = {mask_size + 2 * num_layers + 2}")
        self.frontend = LogMel(input_dim, cmvn)
        self.blocks = nn.ModuleList(
            ConvBlock(input_dim if i == 0 else hidden_size, hidden_size, residual and i > 0,
                      dropout) for i in range(num_layers))
        self.masked = nn.ModuleList()
        for i in range(num_layers):
            radius = mask_size // 2 + i + 1
            self.masked.append(MaskedConv(hidden_size, hidden_size, radius,
                                          kernel_size // 2 - radius))
        self.postnet = nn.Linear(hidden_size, input_dim)

    def _layers(self, feats: Tensor, lengths: Tensor) -> list[Tensor]:
        """(B, T, input_dim) -> num_layers block outputs + the representation, (B, T, H) each."""
        T = feats.shape[1]
        valid = None if unpadded(lengths, T) else valid_mask(lengths, T)
        keep = None if valid is None else valid.unsqueeze(1).to(feats.dtype)  # (B, 1, T)
        x = feats.transpose(1, 2)
        if keep is not None:
            x = x * keep
        outs, rep = [], 0.0
        for block, masked in zip(self.blocks, self.masked, strict=True):
            x = block(x, valid)
            if keep is not None:
                x = x * keep
            rep = rep + torch.tanh(masked(x))
            outs.append(x.transpose(1, 2))
        if keep is not None:
            rep = rep * keep
        return outs + [rep.transpose(1, 2)]

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        feats, n = self.frontend(wavs, lengths)
        return UpstreamOutput(hidden_states=self._layers(feats, n), lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        feats, n = self.frontend(wavs, lengths)
        pred = self.postnet(self._layers(feats, n)[-1])
        valid = valid_mask(n, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
        loss = ((pred - feats).abs() * valid).sum() / (valid.sum() * feats.shape[-1]).clamp(min=1)
        return {"loss": loss}
