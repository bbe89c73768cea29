"""DeLoRes: Ghosh, Seth, Umesh and Manocha, 2022, "DeLoRes: Decorrelating Latent Spaces for
Low-Resource Audio Representation Learning" (its DeLoRes-S: Barlow Twins, Zbontar et al.,
2021, on BYOL-A's views and encoder; VICReg, Bardes et al., 2022, as the other loss).

Two augmented views of one log-mel segment of each clip (BYOL-A's: log-mixup-exp with a past
segment and a random resize crop, speechssl/upstream/byol_a.py), the same network on both
(BYOL-A's conv encoder, clip embedding max + mean over time, an MLP expander), and a loss on
the two batches of embeddings that needs no negatives, no predictor and no moving average:
``loss=barlow_twins`` pushes the views' cross-correlation matrix to the identity (lambda
5e-3 on the off-diagonal terms); ``loss=vicreg`` weighs invariance (MSE, 25), variance (a
hinge keeping each dimension's std at 1, 25) and covariance (1). Expander widths default to
Barlow Twins' 3 x 8192 (DeLoRes's own sizes are in its code release, not read here).
"""

from __future__ import annotations

from torch import Tensor

from speechssl.errors import ConfigError
from speechssl.nn.audio_cnn import mlp
from speechssl.nn.joint_embedding import barlow_twins, normalized_std, pair_accuracy, vicreg
from speechssl.nn.random import generator_from_global
from speechssl.upstream.base import register_upstream
from speechssl.upstream.byol_a import ClipViews

LOSSES = ("barlow_twins", "vicreg")


@register_upstream("delores")
class DeLoRes(ClipViews):
    """Hidden states: BYOL-A's encoder's two fully connected layers (``dim`` wide)."""

    contract_options = {"channels": 8, "dim": 32, "expander": [32, 32], "time_pool": [2, 1, 1],
                        "crop_frames": 32}  # tests

    def __init__(self, mel_bins: int = 64, channels: int = 64, dim: int = 2048,
                 dropout: float = 0.3, time_pool: list[int] = (2, 2, 2),
                 crop_frames: int = 96, mixup_alpha: float = 0.4, memory_size: int = 2048,
                 crop_scale: float = 1.5, time_scale: list[float] = (0.6, 1.5),
                 freq_scale: list[float] = (0.6, 1.5), expander: list[int] = (8192, 8192, 8192),
                 loss: str = "barlow_twins", lambd: float = 5e-3, sim_weight: float = 25.0,
                 var_weight: float = 25.0, cov_weight: float = 1.0):
        super().__init__(mel_bins, channels, dim, dropout, time_pool, crop_frames, mixup_alpha,
                         memory_size, crop_scale, time_scale, freq_scale)
        if loss not in LOSSES:
            raise ConfigError(f"upstream.loss={loss!r}; valid: {', '.join(LOSSES)}")
        if len(expander) < 1:
            raise ConfigError("upstream.expander: at least one width")
        self.expander = mlp([dim, *expander])
        self.loss_name, self.lambd = loss, lambd
        self.weights = (sim_weight, var_weight, cov_weight)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        v1, v2 = self.views(wavs, lengths, generator_from_global())
        z1, z2 = self.expander(self.embed(v1)), self.expander(self.embed(v2))
        if self.loss_name == "barlow_twins":
            loss, parts = barlow_twins(z1, z2, self.lambd)
        else:
            loss, parts = vicreg(z1, z2, *self.weights)
        return {"loss": loss, **parts, "pair_accuracy": pair_accuracy(z1, z2),
                "embedding_std": normalized_std(z1)}
