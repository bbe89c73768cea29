"""Vector quantizers: van den Oord et al., 2017, "Neural Discrete Representation Learning"
(nearest-neighbour VQ, straight-through, commitment loss, EMA codebook) and Jang et al.,
2017, "Categorical Reparameterization with Gumbel-Softmax" (grouped Gumbel VQ, as in
Baevski et al., 2020, vq-wav2vec / wav2vec 2.0, and Chung et al., 2020, VQ-APC).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def perplexity(probs: Tensor) -> Tensor:
    """exp(entropy) of the mean distribution. probs: (N, G, V) -> sum over the G groups."""
    avg = probs.mean(dim=0)  # (G, V)
    return torch.exp(-(avg * torch.log(avg + 1e-7)).sum(-1)).sum()


def _flat(x: Tensor, mask: Tensor | None) -> Tensor:
    """(B, T, ...) and (B, T) bool valid -> (N, ...) valid rows."""
    return x.flatten(0, 1) if mask is None else x[mask]


class GumbelQuantizer(nn.Module):
    """(B, T, in_dim) -> (B, T, code_dim) via ``groups`` Gumbel-softmax choices among
    ``num_codes`` entries each (hard one-hot forward, soft gradient). In eval mode the
    choice is the argmax. Temperature: max(end, start * decay ** step), step counted in
    training calls and saved with the weights. ``init_std``: if given, the logit projection
    starts as N(0, init_std^2) weights and zero bias (fairseq's wav2vec 2.0 uses 1, so the hard
    choices are nearly deterministic from the start); None keeps PyTorch's default init.
    ``proj_depth`` > 1 puts proj_depth - 1 hidden layers (GELU, ``proj_factor`` x in_dim wide)
    before the logit layer, as fairseq's vq-wav2vec recipe (--vq-depth 2); ``shared``: one
    codebook for all groups (its --combine-groups).
    """

    def __init__(self, in_dim: int, num_codes: int, code_dim: int, groups: int = 1,
                 temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995),
                 init_std: float | None = None, proj_depth: int = 1, proj_factor: int = 2,
                 shared: bool = False):
        super().__init__()
        if code_dim % groups:
            raise ValueError(f"code_dim {code_dim} is not divisible by {groups} groups")
        if proj_depth < 1:
            raise ValueError(f"proj_depth {proj_depth} < 1")
        self.num_codes, self.groups = num_codes, groups
        self.temp_start, self.temp_end, self.temp_decay = (float(t) for t in temperature)
        hidden, width = [], in_dim
        for _ in range(proj_depth - 1):
            hidden += [nn.Linear(width, in_dim * proj_factor), nn.GELU()]
            width = in_dim * proj_factor
        self.hidden = nn.Sequential(*hidden)
        self.logits = nn.Linear(width, groups * num_codes)
        if init_std is not None:
            nn.init.normal_(self.logits.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.logits.bias)
        self.codebook = nn.Parameter(torch.randn(1 if shared else groups, num_codes,
                                                 code_dim // groups))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self) -> float:
        return max(self.temp_end, self.temp_start * self.temp_decay ** int(self.step))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """x: (B, T, in_dim); mask: (B, T) valid. Returns quantized (B, T, code_dim), codes
        (B, T, G), prob_perplexity (soft, differentiable) and code_perplexity (hard)."""
        B, T, _ = x.shape
        logits = self.logits(self.hidden(x)).view(B, T, self.groups, self.num_codes)
        book = self.codebook.expand(self.groups, -1, -1)  # a view when shared
        if self.training:  # one-hot matmul: the straight-through gradient reaches the logits
            onehot = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True).to(x.dtype)
            codes = onehot.argmax(-1)
            self.step += 1
            quantized = torch.einsum("btgv,gvd->btgd", onehot, book)
        else:  # the argmax entries, looked up (no one-hot matmul)
            codes = logits.argmax(-1)
            group = torch.arange(self.groups, device=x.device)
            quantized = book[group, codes].to(x.dtype)  # (B, T, G, code_dim / G)
        quantized = quantized.reshape(B, T, -1)
        soft = logits.float().softmax(-1)
        return {"quantized": quantized, "codes": codes,
                "prob_perplexity": perplexity(_flat(soft, mask)),
                "code_perplexity": perplexity(_flat(F.one_hot(codes, self.num_codes).float(), mask))}


def nearest_codes(z: Tensor, codebook: Tensor) -> Tensor:
    """z: (N, D), codebook: (K, D) -> (N,) index of the nearest entry (Euclidean)."""
    d = (z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(1))
    return d.argmin(1)


def vq_losses(z: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """(commitment, codebook) MSE terms: ||z - sg(q)||^2 and ||sg(z) - q||^2, means over elements."""
    return F.mse_loss(z, q.detach()), F.mse_loss(z.detach(), q)


def ema_update(cluster_size: Tensor, embed_sum: Tensor, z: Tensor, codes: Tensor,
               decay: float, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """One EMA codebook step (van den Oord et al., 2017, appendix A.1), with Laplace smoothing.

    cluster_size: (K,), embed_sum: (K, D), z: (N, D), codes: (N,). Returns the new
    (cluster_size, embed_sum, codebook): N_k <- g N_k + (1-g) n_k, m_k <- g m_k + (1-g) sum z,
    e_k = m_k / N~_k with N~_k = (N_k + eps) / (n + K eps) * n, n = sum_k N_k.
    """
    K = cluster_size.shape[0]
    onehot = F.one_hot(codes, K).to(z.dtype)  # (N, K)
    cluster_size = decay * cluster_size + (1 - decay) * onehot.sum(0)
    embed_sum = decay * embed_sum + (1 - decay) * onehot.t() @ z
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + K * eps) * n
    return cluster_size, embed_sum, embed_sum / smoothed.unsqueeze(1)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour VQ with straight-through gradients and a commitment loss (beta).

    ema: codebook updated by exponential moving averages instead of the codebook loss.
    restart_threshold > 0: in training, entries whose EMA usage falls below it are
    re-initialised to random encoder outputs of the batch (dead-code restart).
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, restart_threshold: float = 0.0):
        super().__init__()
        self.num_codes, self.beta, self.ema = num_codes, beta, ema
        self.decay, self.eps, self.restart_threshold = decay, eps, restart_threshold
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) / dim ** 0.5, requires_grad=not ema)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", self.codebook.detach().clone())

    def forward(self, z: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """z: (B, T, D); mask: (B, T) valid. Returns quantized (B, T, D, straight-through),
        codes (B, T), loss (beta * commitment [+ codebook]), commitment, perplexity."""
        B, T, D = z.shape
        codes = nearest_codes(z.detach().flatten(0, 1), self.codebook.detach()).view(B, T)
        flat, codes_flat = _flat(z, mask), _flat(codes, mask)
        commitment, codebook_loss = vq_losses(flat, self.codebook[codes_flat])
        loss = self.beta * commitment + (0.0 if self.ema else codebook_loss)
        if self.training:
            self._update(flat.detach(), codes_flat)
        q = self.codebook[codes]
        quantized = z + (q - z).detach()  # straight-through estimator
        usage = F.one_hot(codes_flat, self.num_codes).float().unsqueeze(1)
        return {"quantized": quantized, "codes": codes, "loss": loss, "commitment": commitment,
                "perplexity": perplexity(usage)}

    @torch.no_grad()
    def _update(self, z: Tensor, codes: Tensor) -> None:
        if self.ema:
            size, summed, book = ema_update(self.cluster_size, self.embed_sum, z, codes,
                                            self.decay, self.eps)
            self.cluster_size.copy_(size)
            self.embed_sum.copy_(summed)
            self.codebook.copy_(book)
        else:  # usage statistics only, for dead-code restarts
            counts = torch.bincount(codes, minlength=self.num_codes).to(self.cluster_size.dtype)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.restart_threshold > 0 and z.shape[0] > 0:
            dead = self.cluster_size < self.restart_threshold
            if dead.any():
                pick = torch.randint(0, z.shape[0], (int(dead.sum()),), device=z.device)
                self.codebook[dead] = z[pick]
                self.embed_sum[dead] = z[pick]
                self.cluster_size[dead] = 1.0


class GroupedKMeansQuantizer(nn.Module):
    """Online k-means quantizer with groups (Baevski et al., 2020, "vq-wav2vec", section 3.3).

    (B, T, dim) is split into ``groups`` slices of dim / groups; each slice is replaced by its
    nearest of ``num_codes`` entries of its own codebook (straight-through gradients). The
    loss is ||sg(z) - q||^2 + gamma ||z - sg(q)||^2 (codebook + commitment, means over
    elements of the valid frames).
    """

    def __init__(self, dim: int, num_codes: int, groups: int = 2, gamma: float = 0.25):
        super().__init__()
        if dim % groups:
            raise ValueError(f"dim {dim} is not divisible by {groups} groups")
        self.num_codes, self.groups, self.gamma = num_codes, groups, gamma
        self.codebook = nn.Parameter(torch.randn(groups, num_codes, dim // groups)
                                     / (dim // groups) ** 0.5)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """z: (B, T, dim); mask: (B, T) valid. Returns quantized (B, T, dim), codes (B, T, G),
        loss, commitment and code_perplexity."""
        B, T, D = z.shape
        zg = z.view(B, T, self.groups, D // self.groups)
        codes = torch.stack([nearest_codes(zg[:, :, g].detach().flatten(0, 1),
                                           self.codebook[g].detach()).view(B, T)
                             for g in range(self.groups)], dim=-1)  # (B, T, G)
        q = torch.stack([self.codebook[g][codes[..., g]] for g in range(self.groups)], dim=2)
        commitment, codebook_loss = vq_losses(_flat(zg, mask), _flat(q, mask))
        quantized = (zg + (q - zg).detach()).reshape(B, T, D)
        usage = F.one_hot(_flat(codes, mask), self.num_codes).float()
        return {"quantized": quantized, "codes": codes,
                "loss": codebook_loss + self.gamma * commitment, "commitment": commitment,
                "code_perplexity": perplexity(usage)}
