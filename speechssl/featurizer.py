"""SUPERB featurizer: a softmax-weighted sum of all upstream layers (weights start equal),
optionally over layers standardised per dimension (or whitened) with train statistics."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask


class Featurizer(nn.Module):
    """(L, B, T, D) stacked layers -> (B, T, D).

    The L logits start at zero, so training starts from the plain layer average.
    ``standardize`` maps each layer to per-dimension z-scores with statistics of the training
    split (:meth:`set_statistics`, kept as buffers, so a saved probe carries them): the
    features' scale then no longer sets the probe's effective learning rate.
    ``whiten`` (with ``standardize``) then decorrelates each layer's dimensions: ZCA whitening
    of the standardised features, ``(C + eps * lambda_max I)^(-1/2)`` of their correlation
    matrix C. A linear probe on whitened features spans the same functions, but gradient
    descent no longer crawls along the near-collinear directions of a feature set whose
    covariance is ill-conditioned (a small CPC's pooled features: condition number 3e7, where
    Adam needs 20000 full-batch steps to reach what it reaches in a few hundred once whitened);
    ``eps`` (:data:`WHITEN_EPS`) caps the gain of the weakest directions, like a mild ridge.
    ``layer_norm`` normalises each layer over D before the sum (s3prl's ``normalize``).
    ``layer`` picks one layer instead (no learned weights), e.g. -1 for the last.
    ``dim`` (D) is needed with ``standardize``.
    """

    WHITEN_EPS = 1e-3  # relative to the largest eigenvalue of the correlation matrix

    def __init__(self, num_layers: int, dim: int | None = None, layer_norm: bool = False,
                 layer: int | None = None, standardize: bool = False, whiten: bool = False):
        super().__init__()
        self.num_layers, self.layer_norm, self.layer = num_layers, layer_norm, layer
        self.standardize, self.whiten = standardize, whiten
        if whiten and not standardize:
            raise ConfigError("downstream.featurizer.whiten=true needs standardize=true (it "
                              "whitens the standardised features)")
        if layer is not None and not -num_layers <= layer < num_layers:
            raise ConfigError(f"downstream.featurizer.layer={layer}: the upstream has "
                              f"{num_layers} layer{'s' * (num_layers != 1)}; must be in "
                              f"[{-num_layers}, {num_layers - 1}] (null = a learned weighted sum)")
        self.weights = nn.Parameter(torch.zeros(num_layers)) if layer is None else None
        if standardize:
            if dim is None:
                raise ValueError("Featurizer(standardize=True) needs the feature size dim")
            self.register_buffer("mean", torch.zeros(num_layers, dim))
            self.register_buffer("inv_std", torch.ones(num_layers, dim))
        if whiten:
            self.register_buffer("whitener", torch.eye(dim).repeat(num_layers, 1, 1))

    def set_statistics(self, mean: Tensor, std: Tensor, cov: Tensor | None = None,
                       eps: float = 1e-5) -> None:
        """(L, D) mean and standard deviation of each layer over the training units; with
        ``whiten``, also their (L, D, D) covariance."""
        self.mean.copy_(mean)
        self.inv_std.copy_(1.0 / (std + eps))
        if self.whiten:
            if cov is None:
                raise ValueError("Featurizer(whiten=True).set_statistics needs the covariance")
            corr = cov.double() * (self.inv_std[:, :, None] * self.inv_std[:, None, :]).double()
            values, vectors = torch.linalg.eigh(corr)
            values = values.clamp(min=0.0)
            floor = self.WHITEN_EPS * values[:, -1:].clamp(min=1e-12)
            gain = (values + floor).rsqrt()
            self.whitener.copy_((vectors * gain[:, None, :]) @ vectors.transpose(1, 2))

    def forward(self, layers: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` (B,): frames past them are set to zero after standardisation (which
        would otherwise move the padding away from zero)."""
        if layers.shape[0] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} layers, got {layers.shape[0]}")
        if self.standardize:
            layers = (layers - self.mean[:, None, None]) * self.inv_std[:, None, None]
            if self.whiten:
                layers = torch.einsum("lbtd,lde->lbte", layers, self.whitener)
            if lengths is not None:
                mask = valid_mask(lengths, layers.shape[2])
                layers = layers * mask[None, :, :, None].to(layers.dtype)
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


@torch.no_grad()
def layer_statistics(source, index_batches: list[list[int]], covariance: bool = False
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-layer, per-dimension mean and standard deviation (L, D) over every valid frame of
    the given batches of a layer source (speechssl.features: CachedLayers, LiveLayers), and
    with ``covariance`` each layer's (L, D, D) covariance (else None); float64 sums, so long
    splits do not lose precision."""
    total = sq = outer = None
    count = 0
    for _, inputs in source.batches(index_batches):
        layers, lengths = source(inputs)  # (L, B, T, D)
        mask = valid_mask(lengths, layers.shape[2]).to(layers.device)
        x = layers.double() * mask[None, :, :, None]
        s, q = x.sum((1, 2)), (x * x).sum((1, 2))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        if covariance:
            o = torch.einsum("lbtd,lbte->lde", x, x)
            outer = o if outer is None else outer + o
        count += int(lengths.sum())
    if total is None or count == 0:
        raise ValueError("no frames to compute the standardisation statistics from")
    mean = total / count
    var = (sq / count - mean * mean).clamp(min=0.0)
    cov = None
    if covariance:
        cov = (outer / count - mean[:, :, None] * mean[:, None, :]).float().cpu()
    return mean.float().cpu(), var.sqrt().float().cpu(), cov
