"""Mockingjay: Liu et al., 2020, "Mockingjay: Unsupervised Speech Representation Learning with
Deep Bidirectional Transformer Encoders".

One transformer encoder over (optionally stacked) log-mel frames, pre-trained to
reconstruct altered input with an L1 loss on the altered elements only. Mockingjay alters
time only (masked acoustic model, 80/10/10). The shared body, ``TransformerReconstruction``,
also holds the channel (frequency band) and magnitude (Gaussian noise) alterations that TERA
(speechssl/upstream/tera.py) adds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.nn import masking
from speechssl.nn.frontend import HOP_SAMPLES, LogMel, stack_frames
from speechssl.nn.random import generator_from_global
from speechssl.nn.transformer import TransformerEncoder
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream


def masked_l1(pred: Tensor, target: Tensor, where: Tensor) -> Tensor:
    """Mean |pred - target| over the elements where ``where`` (broadcastable to pred) is True."""
    where = where.expand_as(pred)
    return ((pred - target).abs() * where).sum() / where.sum().clamp(min=1)


class TransformerReconstruction(Upstream):
    """Shared body: frames -> stack -> Linear -> positions -> LayerNorm -> dropout ->
    transformer layers. Hidden states: the input embedding and every layer's output."""

    tuning_modes = TRANSFORMER_TUNING

    def __init__(self, input_dim: int = 80, downsample: int = 1, hidden_size: int = 256,
                 num_layers: int = 3, num_heads: int = 4, ff_size: int = 1024, dropout: float = 0.1,
                 position: str = "sinusoidal", norm_first: bool = False,
                 time_mask_ratio: float = 0.15, time_mask_span: int = 7,
                 zero_prob: float = 0.8, random_prob: float = 0.1,
                 channel_mask_width: int = 0, noise_prob: float = 0.0, noise_std: float = 0.2,
                 cmvn: str = "utterance"):
        super().__init__()
        self.frontend = LogMel(input_dim, cmvn)
        self.downsample = downsample
        self.downsample_rate = HOP_SAMPLES * downsample
        self.time_mask_ratio, self.time_mask_span = time_mask_ratio, time_mask_span
        self.zero_prob, self.random_prob = zero_prob, random_prob
        self.channel_mask_width = channel_mask_width
        self.noise_prob, self.noise_std = noise_prob, noise_std
        dim = input_dim * downsample
        self.embed = nn.Linear(dim, hidden_size)
        self.embed_norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(hidden_size, num_layers, num_heads, ff_size, dropout,
                                          dropout, norm_first, position)
        self.head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                  nn.LayerNorm(hidden_size), nn.Linear(hidden_size, dim))

    def _frames(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, n = self.frontend(wavs, lengths)
        return stack_frames(feats, n, self.downsample)

    def _layers(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        """x: (B, T, k*80) -> [(B, T, H)] * (num_layers + 1)."""
        pad = ~masking.valid_mask(lengths, x.shape[1])
        h = self.dropout(self.embed_norm(self.encoder.add_positions(self.embed(x))))
        return [h] + self.encoder(h, pad)

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        x, n = self._frames(wavs, lengths)
        return UpstreamOutput(hidden_states=self._layers(x, n), lengths=n)

    def alter(self, x: Tensor, lengths: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Time, channel and magnitude alterations: (altered x, (B, T, D) bool altered)."""
        B, T, D = x.shape
        valid = masking.valid_mask(lengths, T)
        altered = torch.zeros(B, T, D, dtype=torch.bool, device=x.device)
        if self.time_mask_ratio > 0:
            time = masking.span_mask(lengths, self.time_mask_ratio, self.time_mask_span, g, T)
            fill, rand = masking.split_replacement(time, g, self.zero_prob, self.random_prob)
            x = masking.replace_frames(x, lengths, fill, rand, g)
            altered |= time.unsqueeze(-1)
        if self.channel_mask_width > 0:
            chan = masking.channel_mask(B, D, self.channel_mask_width, g).to(x.device)
            x = x.masked_fill(chan.unsqueeze(1), 0.0)
            altered |= chan.unsqueeze(1) & valid.unsqueeze(-1)
        if self.noise_prob > 0:
            which = masking.noise_mask(B, self.noise_prob, g).to(x.device)
            x = masking.add_noise(x, lengths, which, self.noise_std, g)
            altered |= (which.unsqueeze(1) & valid).unsqueeze(-1)
        return x, altered

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        x, n = self._frames(wavs, lengths)
        g = generator_from_global()
        altered_x, altered = self.alter(x, n, g)
        if not altered.any():  # nothing drawn (very short batch): reconstruct everything
            altered = masking.valid_mask(n, x.shape[1]).unsqueeze(-1).expand_as(x)
        pred = self.head(self._layers(altered_x, n)[-1])
        return {"loss": masked_l1(pred, x, altered),
                "altered_fraction": altered.float().mean().detach()}


@register_upstream("mockingjay")
class Mockingjay(TransformerReconstruction):
    """Masked acoustic model: 15% of frames in spans of 7, 80% zeroed / 10% random / 10% kept,
    L1 on the selected frames. ``downsample`` k stacks k frames (160*k samples per frame)."""

    def __init__(self, input_dim: int = 80, downsample: int = 1, hidden_size: int = 256,
                 num_layers: int = 3, num_heads: int = 4, ff_size: int = 1024, dropout: float = 0.1,
                 position: str = "sinusoidal", norm_first: bool = False,
                 mask_ratio: float = 0.15, mask_span: int = 7, zero_prob: float = 0.8,
                 random_prob: float = 0.1, cmvn: str = "utterance"):
        super().__init__(input_dim, downsample, hidden_size, num_layers, num_heads, ff_size,
                         dropout, position, norm_first, mask_ratio, mask_span, zero_prob,
                         random_prob, channel_mask_width=0, noise_prob=0.0, cmvn=cmvn)
