"""NPC: Liu, Chung and Glass, 2021, "Non-Autoregressive Predictive Coding for Learning Speech
Representations from Local Dependencies".

A stack of convolution blocks over log-mel frames. Beside each block a *masked* convolution
reads the block's input with the taps around the centre zeroed, wide enough that the sum of
all masked outputs at frame t never depends on frames t - M//2 .. t + M//2 (M =
``mask_size``). That sum is the representation; a linear layer predicts frame t from it (L1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.nn.frontend import HOP_SAMPLES, LogMel
from speechssl.nn.masking import valid_mask
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


def centre_masked_kernel(taps: Tensor, radius: int) -> Tensor:
    """(C_out, C_in, 2R) learned taps -> (C_out, C_in, 2R + 2*radius + 1) kernel whose taps at
    offsets -radius..radius around the centre are zero (R taps on each side of the hole)."""
    R = taps.shape[-1] // 2
    hole = taps.new_zeros(*taps.shape[:2], 2 * radius + 1)
    return torch.cat([taps[..., :R], hole, taps[..., R:]], dim=-1)


class MaskedConv(nn.Module):
    """Conv1d that never reads frames within ``radius`` of the centre; ``reach`` learned taps
    on each side of that hole (only the taps are parameters, not the zeros)."""

    def __init__(self, in_dim: int, out_dim: int, radius: int, reach: int):
        super().__init__()
        self.radius, self.reach = radius, reach
        self.taps = nn.Parameter(torch.empty(out_dim, in_dim, 2 * reach))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.kaiming_uniform_(self.taps, a=5 ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C_out, T)."""
        w = centre_masked_kernel(self.taps, self.radius)
        return F.conv1d(x, w, self.bias, padding=self.radius + self.reach)


@register_upstream("npc")
class NPC(Upstream):
    """``num_layers`` conv blocks (kernel ``kernel_size``, ReLU, layer norm, residual), a masked
    conv beside each. Hidden states: every block output and the masked-sum representation
    (the paper's feature), all ``hidden_size`` wide. Padded frames are zeroed between layers."""

    downsample_rate = HOP_SAMPLES

    def __init__(self, input_dim: int = 80, hidden_size: int = 512, num_layers: int = 4,
                 kernel_size: int = 15, mask_size: int = 5, dropout: float = 0.1,
                 cmvn: str = "utterance"):
        super().__init__()
        if kernel_size % 2 == 0 or mask_size % 2 == 0:
            raise ValueError("kernel_size and mask_size must be odd")
        self.frontend = LogMel(input_dim, cmvn)
        half = kernel_size // 2
        sizes = [input_dim] + [hidden_size] * num_layers
        self.convs = nn.ModuleList(nn.Conv1d(sizes[i], hidden_size, kernel_size, padding=half)
                                   for i in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))
        # block i's input sees frames within i*half of its centre: mask that much more
        self.masked = nn.ModuleList(MaskedConv(sizes[i], hidden_size, mask_size // 2 + i * half, half)
                                    for i in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.postnet = nn.Linear(hidden_size, input_dim)

    def _layers(self, feats: Tensor, lengths: Tensor) -> list[Tensor]:
        """(B, T, input_dim) -> num_layers block outputs + the representation, (B, T, H) each."""
        keep = valid_mask(lengths, feats.shape[1]).unsqueeze(1).to(feats.dtype)  # (B, 1, T)
        x = feats.transpose(1, 2) * keep
        outs, rep = [], 0.0
        for i, (conv, norm, masked) in enumerate(zip(self.convs, self.norms, self.masked, strict=True)):
            rep = rep + masked(x)
            y = norm(torch.relu(conv(x)).transpose(1, 2)).transpose(1, 2)
            y = self.dropout(y)
            if i > 0:
                y = y + x
            x = y * keep
            outs.append(x.transpose(1, 2))
        return outs + [(rep * keep).transpose(1, 2)]

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        feats, n = self.frontend(wavs, lengths)
        return UpstreamOutput(hidden_states=self._layers(feats, n), lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        feats, n = self.frontend(wavs, lengths)
        pred = self.postnet(self._layers(feats, n)[-1])
        valid = valid_mask(n, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
        loss = ((pred - feats).abs() * valid).sum() / (valid.sum() * feats.shape[-1]).clamp(min=1)
        return {"loss": loss}
