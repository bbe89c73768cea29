"""Losses between the embeddings of two views of the same clips (joint-embedding methods):
SimCLR's NT-Xent (Chen et al., 2020), BYOL's normalised regression (Grill et al., 2020),
Barlow Twins (Zbontar et al., 2021) and VICReg (Bardes et al., 2022); and the pretext
metrics shared by them. Every function takes (N, D) embeddings, row i of ``z1`` and of ``z2``
being two views of clip i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> tuple[Tensor, Tensor]:
    """SimCLR's normalised temperature-scaled cross-entropy over the 2N views: each view's
    positive is the other view of its clip, its negatives the other 2N - 2 views. Returns
    (mean loss, accuracy: the fraction of views whose positive scores highest; chance
    1 / (2N - 1))."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss = F.cross_entropy(sim, target)
    return loss, (sim.argmax(-1) == target).float().mean()


def byol_regression(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's loss, 2 - 2 cos(p, z), per row, averaged (``z`` is the target: pass it
    detached)."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1)).mean()


def batch_standardize(z: Tensor, eps: float = 1e-5) -> Tensor:
    """(N, D) -> zero mean, unit (biased) variance per dimension over the batch."""
    z = z.float()
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal elements of a square matrix, flattened."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def barlow_twins(z1: Tensor, z2: Tensor, lambd: float = 5e-3) -> tuple[Tensor, dict]:
    """Barlow Twins: C = the (D, D) cross-correlation of the batch-standardised views;
    loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2."""
    n = z1.shape[0]
    c = batch_standardize(z1).t() @ batch_standardize(z2) / n
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = off_diagonal(c).pow(2).sum()
    return on + lambd * off, {"invariance": on.detach(), "redundancy": off.detach()}


def vicreg(z1: Tensor, z2: Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4
           ) -> tuple[Tensor, dict]:
    """VICReg: sim_weight * MSE(z1, z2) + var_weight * mean over both views and dimensions
    of relu(gamma - sqrt(var + eps)) + cov_weight * (sum of squared off-diagonal covariances)
    / D, for each view."""
    z1, z2 = z1.float(), z2.float()
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)
    var, cov = z1.new_zeros(()), z1.new_zeros(())
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + eps)
        var = var + F.relu(gamma - std).mean() / 2
        c = z.t() @ z / (n - 1)
        cov = cov + off_diagonal(c).pow(2).sum() / d
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(),
                  "covariance": cov.detach()}


@torch.no_grad()
def pair_accuracy(z1: Tensor, z2: Tensor) -> Tensor:
    """The fraction of clips whose view 1 is closest (cosine) to its own view 2 among the
    batch's view 2s: chance 1 / N, and chance again for a collapsed (constant) embedding."""
    s = F.normalize(z1.float(), dim=-1) @ F.normalize(z2.float(), dim=-1).t()
    return (s.argmax(-1) == torch.arange(len(s), device=s.device)).float().mean()


@torch.no_grad()
def normalized_std(z: Tensor) -> Tensor:
    """The mean over dimensions of the batch std of the l2-normalised embeddings (SimSiam's
    collapse monitor): 0 for a collapsed embedding, about 1 / sqrt(D) for a spread one."""
    return F.normalize(z.float(), dim=-1).std(0).mean()
