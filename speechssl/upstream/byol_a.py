"""BYOL-A: Niizumi, Takeuchi, Ohishi, Harada and Kashino, 2021, "BYOL for Audio:
Self-Supervised Learning for General-Purpose Audio Representation" (BYOL: Grill et al., 2020).

One log-mel segment of each clip (64 bins, 96 frames, normalised by corpus statistics) gives
two views, each mixed with a past segment (log-mixup-exp, ratio U(0, 0.4)) and randomly
resize-cropped. The online network (BYOL-A's conv encoder, speechssl/nn/audio_cnn.py; clip
embedding max + mean over time; projector MLP 4096 -> 256; predictor MLP 4096 -> 256)
regresses the target network's projection of the other view (2 - 2 cos, both ways). The
target network is an exponential moving average of the online encoder and projector
(tau = 0.99) and gets no gradient. No negatives: the predictor and the slowly moving target
are what keep the embedding from collapsing (``predictor=false``, ``ema_decay=0`` take them
away). The shared body, ``ClipViews``, also serves DeLoRes (speechssl/upstream/delores.py).
Not reproduced: BYOL-A's post-normalisation of the augmented views.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from speechssl.errors import ConfigError
from speechssl.nn.audio_cnn import AudioNTT, max_plus_mean, mlp
from speechssl.nn.ema import ema_update_
from speechssl.nn.frontend import HOP_SAMPLES, LogMel
from speechssl.nn.joint_embedding import byol_regression, normalized_std, pair_accuracy
from speechssl.nn.random import generator_from_global
from speechssl.nn.views import log_mixup_exp, random_resize_crop, segments
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


class ClipViews(Upstream):
    """Log-mel (corpus CMVN) -> BYOL-A's conv encoder; hidden states: its two fully connected
    layers, ``dim`` wide, 160 x prod(time_pool) samples per frame. ``views`` draws the two
    augmented views of a batch; ``embed`` gives clip embeddings of segments.

    The mixup partners come from a first-in first-out memory of the last ``memory_size``
    segments seen in training (BYOL-A: 2048); it is not saved with the weights, so a resumed
    run refills it (the first batch mixes within itself)."""

    def __init__(self, mel_bins: int = 64, channels: int = 64, dim: int = 2048,
                 dropout: float = 0.3, time_pool: list[int] = (2, 2, 2),
                 crop_frames: int = 96, mixup_alpha: float = 0.4, memory_size: int = 2048,
                 crop_scale: float = 1.5, time_scale: list[float] = (0.6, 1.5),
                 freq_scale: list[float] = (0.6, 1.5)):
        super().__init__()
        if crop_frames < 8:
            raise ConfigError(f"upstream.crop_frames={crop_frames}: at least 8 frames")
        if not 0.0 <= mixup_alpha < 1.0:
            raise ConfigError(f"upstream.mixup_alpha={mixup_alpha}: in [0, 1)")
        self.frontend = LogMel(mel_bins, cmvn="global")
        self.encoder = AudioNTT(mel_bins, channels, dim, dropout, time_pool)
        self.downsample_rate = HOP_SAMPLES * self.encoder.stride
        self.crop_frames, self.mixup_alpha, self.memory_size = crop_frames, mixup_alpha, memory_size
        self.crop_scale, self.time_scale, self.freq_scale = crop_scale, tuple(time_scale), tuple(freq_scale)
        self._memory: list[Tensor] = []  # past segments (not state)

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        feats, n = self.frontend(wavs, lengths)
        layers, frames = self.encoder(feats, n)
        return UpstreamOutput(hidden_states=layers, lengths=frames)

    def views(self, wavs: Tensor, lengths: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Two augmented views (B, crop_frames, mel_bins) of one random segment of each clip."""
        feats, n = self.frontend(wavs, lengths)
        seg = segments(feats, n, self.crop_frames, g)
        memory = torch.cat(self._memory) if self._memory else seg
        out = []
        for _ in range(2):
            v = seg
            if self.mixup_alpha > 0:
                pick = torch.randint(len(memory), (len(seg),), generator=g)
                v = log_mixup_exp(v, memory[pick.to(memory.device)], self.mixup_alpha, g)
            out.append(random_resize_crop(v, g, self.crop_scale, self.time_scale, self.freq_scale))
        if self.training and self.memory_size > 0:
            self._memory.append(seg.detach())
            while len(self._memory) > 1 and sum(map(len, self._memory)) > self.memory_size:
                self._memory.pop(0)
        return out[0], out[1]

    def embed(self, segs: Tensor, encoder: AudioNTT | None = None) -> Tensor:
        """(B, T, F) segments -> (B, dim) clip embeddings (max + mean of the last layer)."""
        full = torch.full((segs.shape[0],), segs.shape[1], device=segs.device)
        layers, n = (encoder or self.encoder)(segs, full)
        return max_plus_mean(layers[-1], n)


@register_upstream("byol_a")
class BYOLA(ClipViews):
    """BYOL on BYOL-A's views and encoder. ``projector`` and ``predictor_dims``: hidden and
    output widths of the MLPs; ``predictor=false`` drops the predictor and ``ema_decay=0``
    makes the target the online network itself (stop-gradient only): the two ablations of
    BYOL's section 5."""

    contract_options = {"channels": 8, "dim": 32, "projector": [32, 16], "time_pool": [2, 1, 1],
                        "crop_frames": 32}  # tests

    def __init__(self, mel_bins: int = 64, channels: int = 64, dim: int = 2048,
                 dropout: float = 0.3, time_pool: list[int] = (2, 2, 2),
                 crop_frames: int = 96, mixup_alpha: float = 0.4, memory_size: int = 2048,
                 crop_scale: float = 1.5, time_scale: list[float] = (0.6, 1.5),
                 freq_scale: list[float] = (0.6, 1.5), projector: list[int] = (4096, 256),
                 predictor: bool = True, ema_decay: float = 0.99):
        super().__init__(mel_bins, channels, dim, dropout, time_pool, crop_frames, mixup_alpha,
                         memory_size, crop_scale, time_scale, freq_scale)
        if not 0.0 <= ema_decay <= 1.0:
            raise ConfigError(f"upstream.ema_decay={ema_decay}: in [0, 1]")
        if len(projector) < 2:
            raise ConfigError(f"upstream.projector={list(projector)}: hidden and output widths")
        self.projector = mlp([dim, *projector])
        out = int(projector[-1])
        self.predictor = mlp([out, int(projector[0]), out]) if predictor else None
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.ema_decay = ema_decay

    def online(self, segs: Tensor) -> Tensor:
        z = self.projector(self.embed(segs))
        return self.predictor(z) if self.predictor is not None else z

    @torch.no_grad()
    def target(self, segs: Tensor) -> Tensor:
        if self.ema_decay == 0:  # the online network, stop-gradient
            return self.projector(self.embed(segs))
        return self.target_projector(self.embed(segs, self.target_encoder))

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        v1, v2 = self.views(wavs, lengths, generator_from_global())
        p1, p2 = self.online(v1), self.online(v2)
        z1, z2 = self.target(v1), self.target(v2)
        loss = byol_regression(p1, z2) + byol_regression(p2, z1)
        return {"loss": loss, "pair_accuracy": pair_accuracy(p1, z2),
                "embedding_std": normalized_std(p1)}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """target <- tau target + (1 - tau) online (encoder and projector)."""
        if self.ema_decay > 0:
            ema_update_(self.target_encoder, self.encoder, self.ema_decay)
            ema_update_(self.target_projector, self.projector, self.ema_decay)
