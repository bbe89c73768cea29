"""SUPERB featurizer: a softmax-weighted sum of all upstream layers (weights start equal)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechssl.errors import ConfigError


class Featurizer(nn.Module):
    """(L, B, T, D) stacked layers -> (B, T, D).

    The L logits start at zero, so training starts from the plain layer average.
    ``layer_norm`` normalises each layer over D before the sum (s3prl's ``normalize``).
    ``layer`` picks one layer instead (no learned weights), e.g. -1 for the last.
    """

    def __init__(self, num_layers: int, layer_norm: bool = False, layer: int | None = None):
        super().__init__()
        self.num_layers, self.layer_norm, self.layer = num_layers, layer_norm, layer
        if layer is not None and not -num_layers <= layer < num_layers:
            raise ConfigError(f"downstream.featurizer.layer={layer}: the upstream has "
                              f"{num_layers} layer{'s' * (num_layers != 1)}; must be in "
                              f"[{-num_layers}, {num_layers - 1}] (null = a learned weighted sum)")
        self.weights = nn.Parameter(torch.zeros(num_layers)) if layer is None else None

    def forward(self, layers: Tensor) -> Tensor:
        if layers.shape[0] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} layers, got {layers.shape[0]}")
        if self.layer_norm:
            layers = F.layer_norm(layers, layers.shape[-1:])
        if self.weights is None:
            return layers[self.layer]
        w = F.softmax(self.weights, dim=0)
        return torch.einsum("l,lbtd->btd", w, layers)

    def layer_weights(self) -> list[float]:
        """The normalised weight of each layer (one-hot for a fixed layer)."""
        if self.weights is None:
            w = torch.zeros(self.num_layers)
            w[self.layer] = 1.0
            return w.tolist()
        return F.softmax(self.weights.detach(), dim=0).cpu().tolist()
