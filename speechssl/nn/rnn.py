"""Recurrent layers on right-padded batches without PackedSequence (whose CPU kernels
are ~10x slower): a causal RNN ignores the padding by construction, and the backward
direction of a bidirectional RNN runs on each sequence reversed within its length."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each (T, D) sequence of a (B, T, D) batch within its length; padding stays
    at the end. Applying it twice gives the input back."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    n = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    index = torch.where(t < n, n - 1 - t, t)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class LSTM(nn.LSTM):
    """``nn.LSTM`` (same parameters and state dict) that runs in fp32 under autocast
    (``precision=bf16``): oneDNN has no bf16 LSTM on CPUs without AVX512-BF16, and a
    recurrence is latency-bound, so bf16 would gain little."""

    def forward(self, x, hx=None):
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x, hx)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float(), hx)


class BiLSTM(nn.Module):
    """Stacked bidirectional LSTM over right-padded (B, T, D) batches -> (B, T, 2H).

    Outputs at valid frames equal those of ``nn.LSTM(bidirectional=True)`` on a packed
    batch; outputs at padded frames are unspecified.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_rnns = nn.ModuleList(LSTM(s, hidden_size, batch_first=True) for s in sizes)
        self.backward_rnns = nn.ModuleList(LSTM(s, hidden_size, batch_first=True) for s in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        for i, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns, strict=True)):
            if i > 0:
                x = self.dropout(x)
            ahead, _ = fwd(x)
            behind, _ = bwd(reverse_padded(x, lengths))
            x = torch.cat([ahead, reverse_padded(behind, lengths)], dim=-1)
        return x
