"""Parameter-efficient tuning layers, plugged into speechssl/nn/transformer.py's hooks
(``TransformerLayer.adapter``, ``SelfAttention.lora_qkv`` / ``lora_out``,
``TransformerEncoder.prefix`` / ``prompt``); speechssl/tuning.py installs them.

Adapter: Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP".
LoRA: Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models".
Prefix: Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation".
Prompt: Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Adapter(nn.Module):
    """Bottleneck adapter: h + up(gelu(down(h))), (..., D) -> (..., D). ``up`` starts at zero,
    so a new adapter is exactly the identity (Houlsby et al.'s near-identity init, made exact).
    Parameters: 2 * D * bottleneck + bottleneck + D."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(h)))


class LoRA(nn.Module):
    """The low-rank update of a frozen linear map W (in_dim -> out_dim), returned on its own:
    (..., in_dim) -> (..., out_dim) = alpha / rank * B A dropout(x); the caller adds W x + b.

    ``groups`` > 1 splits the output into that many equal blocks with one (A, B) pair each:
    a fused q/k/v projection gets three independent rank-``rank`` updates, as LoRA on W_q,
    W_k and W_v separately. A: Kaiming-uniform (as nn.Linear), B: zeros, so the update starts
    at exactly zero. Parameters: groups * rank * in_dim + out_dim * rank."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, dropout: float = 0.0,
                 groups: int = 1):
        super().__init__()
        if out_dim % groups:
            raise ValueError(f"LoRA: out_dim {out_dim} is not divisible by {groups} groups")
        self.rank, self.groups, self.scaling = rank, groups, alpha / rank
        self.A = nn.Parameter(torch.empty(groups, rank, in_dim))
        self.B = nn.Parameter(torch.zeros(groups, out_dim // groups, rank))
        for g in range(groups):
            nn.init.kaiming_uniform_(self.A.data[g], a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.einsum("...i,gri->...gr", self.dropout(x), self.A)
        y = torch.einsum("...gr,gor->...go", h, self.B)
        return (y * self.scaling).flatten(-2)


class Prefix(nn.Module):
    """Learned attention prefixes for every layer: () -> (num_layers, 2, length, dim), the
    keys and values (after the q/k/v projection) prepended in each layer's self-attention.

    ``reparam_hidden`` > 0: Li & Liang's reparameterisation, one MLP shared by all layers
    (length x dim embedding -> Linear -> tanh -> Linear to num_layers * 2 * dim), which they
    found steadier to train; 0: the keys and values are the parameters themselves."""

    def __init__(self, num_layers: int, dim: int, length: int, reparam_hidden: int = 0,
                 init_std: float = 1.0):
        super().__init__()
        self.num_layers, self.dim, self.length = num_layers, dim, length
        if reparam_hidden > 0:
            self.embed = nn.Parameter(torch.randn(length, dim) * init_std)
            self.mlp = nn.Sequential(nn.Linear(dim, reparam_hidden), nn.Tanh(),
                                     nn.Linear(reparam_hidden, num_layers * 2 * dim))
            self.kv = None
        else:
            self.embed, self.mlp = None, None
            self.kv = nn.Parameter(torch.randn(num_layers, 2, length, dim) * init_std)

    def forward(self) -> Tensor:
        if self.kv is not None:
            return self.kv
        out = self.mlp(self.embed)  # (P, L * 2 * D)
        return out.view(self.length, self.num_layers, 2, self.dim).permute(1, 2, 0, 3)


def soft_prompt(length: int, dim: int, init_std: float = 1.0) -> nn.Parameter:
    """(length, dim) prompt vectors, N(0, init_std^2): the transformer's inputs are layer
    normalised (about unit variance per feature), so std 1 puts them on the same scale."""
    return nn.Parameter(torch.randn(length, dim) * init_std)
