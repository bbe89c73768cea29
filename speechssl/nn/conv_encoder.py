"""Strided convolutional feature encoder on the raw waveform: Schneider et al., 2019,
"wav2vec: Unsupervised Pre-training for Speech Recognition" (and CPC, van den Oord et al.,
2018; wav2vec 2.0, Baevski et al., 2020, which uses stride 320).

Convolutions without padding, so a sequence of ``n`` samples gives
``floor((n - kernel) / stride) + 1`` frames per layer; frames past a sequence's end are
zeroed after every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask

NORMS = ("group_first", "group", "layer", "channel", "none")

# wav2vec 2.0 (Baevski et al., 2020): 512 channels, kernels (10,3,3,3,3,2,2), strides (5,2,2,2,2,2,2)
WAV2VEC2_KERNELS, WAV2VEC2_STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
# CPC / wav2vec (2019): kernels (10,8,4,4,4), strides (5,4,2,2,2): 160 samples = 10 ms per frame
CPC_KERNELS, CPC_STRIDES = (10, 8, 4, 4, 4), (5, 4, 2, 2, 2)


def conv_output_lengths(lengths: Tensor, kernels, strides) -> Tensor:
    """(B,) input samples -> (B,) output frames of unpadded convolutions (never negative)."""
    n = lengths
    for k, s in zip(kernels, strides, strict=True):
        n = (torch.div(n - k, s, rounding_mode="floor") + 1).clamp(min=0)
    return n


def unpadded(lengths: Tensor, T: int) -> bool:
    """True when every sequence fills all ``T`` frames, so no padding mask is needed (the
    length-bucketed batches of feature extraction often are)."""
    return bool((lengths >= T).all())


class ChannelNorm(nn.Module):
    """Normalise each time step over its channels (the "channel norm" of the modified CPC,
    Riviere et al., 2020), with a per-channel affine. (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
        return torch.addcmul(self.bias, (x - mean) * torch.rsqrt(var + self.eps), self.weight)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm over channels and *valid* time steps only, so padding never changes the
    valid frames (nn.GroupNorm pools over the padded length). Same parameters and state dict
    as nn.GroupNorm. forward((B, C, T), mask (B, T) bool, True at each sequence's first
    frames) -> (B, C, T), zero at padded frames.

    The statistics are per sequence anyway, so an unpadded batch is one fused group norm and
    a padded one is one per sequence on its valid frames (no element-wise masking passes)."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None or bool(mask.all()):
            return super().forward(x)
        out = x.new_zeros(x.shape)
        for b, n in enumerate(mask.sum(1).tolist()):
            if n:
                out[b, :, :n] = F.group_norm(x[b:b + 1, :, :n], self.num_groups, self.weight,
                                             self.bias, self.eps)[0]
        return out


class _TimeLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, channels: int, first: bool) -> nn.Module:
    if kind == "group_first":  # wav2vec 2.0 "default": per-channel norm over time, layer 0 only
        return MaskedGroupNorm(channels, channels) if first else nn.Identity()
    if kind == "group":  # wav2vec: one group, i.e. over channels and time
        return MaskedGroupNorm(1, channels)
    if kind == "layer":
        return _TimeLayerNorm(channels)
    if kind == "channel":
        return ChannelNorm(channels)
    return nn.Identity()


class ConvFeatureEncoder(nn.Module):
    """Waveforms (B, S) -> features (B, T, channels), T = frames of the longest sequence.

    Each layer: Conv1d(kernel, stride, no padding) -> norm -> activation; group norms pool
    over valid frames only, so padding never changes them. ``norm`` is one of
    "group_first" (wav2vec 2.0), "group" (wav2vec), "layer", "channel" (modified CPC), "none".
    ``log_compression``: output log(1 + |x|) (wav2vec).
    """

    def __init__(self, channels: int = 512, kernels=WAV2VEC2_KERNELS, strides=WAV2VEC2_STRIDES,
                 norm: str = "group_first", activation: str = "gelu", bias: bool = False,
                 log_compression: bool = False, dropout: float = 0.0):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"conv encoder norm={norm!r}; valid: {', '.join(NORMS)}")
        if activation not in ("gelu", "relu"):
            raise ConfigError(f"conv encoder activation={activation!r}; valid: gelu, relu")
        self.kernels, self.strides = [int(k) for k in kernels], [int(s) for s in strides]
        if len(self.kernels) != len(self.strides) or not self.kernels:
            raise ConfigError(f"conv encoder: {len(self.kernels)} kernels but "
                              f"{len(self.strides)} strides")
        self.channels, self.log_compression = channels, log_compression
        act = nn.GELU if activation == "gelu" else nn.ReLU
        self.layers = nn.ModuleList(
            nn.ModuleDict({"conv": nn.Conv1d(1 if i == 0 else channels, channels, k, stride=s,
                                             bias=bias),
                           "norm": _norm(norm, channels, i == 0)})
            for i, (k, s) in enumerate(zip(self.kernels, self.strides, strict=True)))
        self.drop, self.act = nn.Dropout(dropout), act()

    @property
    def stride(self) -> int:
        out = 1
        for s in self.strides:
            out *= s
        return out

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return conv_output_lengths(lengths, self.kernels, self.strides)

    def forward(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """wavs: (B, S), lengths: (B,) samples -> (B, T, C) features, (B,) frames."""
        if wavs.shape[-1] < self.kernels[0]:
            wavs = nn.functional.pad(wavs, (0, self.kernels[0] - wavs.shape[-1]))
        x = wavs.unsqueeze(1)
        n = lengths
        padded = not unpadded(lengths, wavs.shape[-1])  # then no layer's output is padded
        for layer, k, s in zip(self.layers, self.kernels, self.strides, strict=True):
            if x.shape[-1] < k:
                x = nn.functional.pad(x, (0, k - x.shape[-1]))
                padded = True
            x = self.drop(layer["conv"](x))
            n = conv_output_lengths(n, [k], [s])
            norm = layer["norm"]
            if padded:
                valid = valid_mask(n, x.shape[-1])
                x = norm(x, valid) if isinstance(norm, MaskedGroupNorm) else norm(x)
                x = self.act(x) * valid.unsqueeze(1)
            else:
                x = self.act(norm(x))
        if self.log_compression:
            x = torch.log1p(x.abs())
        return x.transpose(1, 2), n
