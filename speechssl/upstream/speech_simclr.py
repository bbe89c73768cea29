"""Speech SimCLR: Jiang, Li, Cao, Zou and Li, 2020, "Speech SimCLR: Combining Contrastive and
Reconstruction Objective for Self-supervised Speech Representation Learning" (SimCLR: Chen
et al., 2020).

Two views of a random crop of each utterance, each augmented on the waveform (the corpus's
own augmentations: speed 0.9 / 1.0 / 1.1, a synthetic room, white / pink / brown noise at
5-20 dB SNR; speechssl/nn/views.py) and on its log-mel (TERA's time masks and frequency-band
masks). A transformer encoder (Mockingjay / TERA's, speechssl/upstream/mockingjay.py) reads
each view; the mean of its last layer over time, through a projection head (MLP), enters
SimCLR's NT-Xent loss over the 2N views of a batch (temperature 0.1), and the reconstruction
of the masked log-mel elements of each view (L1, as TERA) is added with ``recon_weight``.
The paper's random pitch shift is not reproduced (the speed change moves pitch too).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn import masking
from speechssl.nn.audio_cnn import mlp
from speechssl.nn.joint_embedding import normalized_std, nt_xent
from speechssl.nn.random import generator_from_global
from speechssl.nn.views import numpy_rng, random_windows, waveform_view
from speechssl.upstream.base import register_upstream
from speechssl.upstream.mockingjay import TransformerReconstruction, masked_l1


@register_upstream("speech_simclr")
class SpeechSimCLR(TransformerReconstruction):
    """Hidden states: the input embedding and every transformer layer (``hidden_size``),
    160 x ``downsample`` samples per frame."""

    contract_options = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
                        "projector": [32, 16]}  # tests

    def __init__(self, input_dim: int = 80, downsample: int = 1, hidden_size: int = 256,
                 num_layers: int = 3, num_heads: int = 4, ff_size: int = 1024, dropout: float = 0.1,
                 position: str = "sinusoidal", norm_first: bool = False,
                 time_mask_ratio: float = 0.15, time_mask_span: int = 7,
                 channel_mask_width: int = 20, cmvn: str = "utterance",
                 crop_seconds: float = 2.0, speeds: list[float] = (0.9, 1.0, 1.1),
                 noise_prob: float = 0.5, noise_snr_db: list[float] = (5.0, 20.0),
                 reverb_prob: float = 0.5, projector: list[int] = (256, 128),
                 temperature: float = 0.1, recon_weight: float = 1.0):
        super().__init__(input_dim, downsample, hidden_size, num_layers, num_heads, ff_size,
                         dropout, position, norm_first, time_mask_ratio, time_mask_span,
                         zero_prob=1.0, random_prob=0.0, channel_mask_width=channel_mask_width,
                         noise_prob=0.0, cmvn=cmvn)
        if crop_seconds <= 0 or temperature <= 0 or recon_weight < 0:
            raise ConfigError(f"upstream.crop_seconds={crop_seconds} and temperature="
                              f"{temperature} must be > 0, recon_weight={recon_weight} >= 0")
        if any(s <= 0 for s in speeds) or len(noise_snr_db) != 2:
            raise ConfigError(f"upstream.speeds={list(speeds)} must be > 0 and noise_snr_db="
                              f"{list(noise_snr_db)} a [low, high] pair")
        self.projection = mlp([hidden_size, *projector], norm=False)
        self.crop_seconds, self.speeds = crop_seconds, tuple(float(s) for s in speeds)
        self.noise_prob_wave, self.noise_snr_db = noise_prob, tuple(noise_snr_db)
        self.reverb_prob, self.temperature, self.recon_weight = reverb_prob, temperature, recon_weight

    def waveform_views(self, wavs: Tensor, lengths: Tensor, g: torch.Generator
                       ) -> list[tuple[Tensor, Tensor]]:
        """Two augmented copies of a random ``crop_seconds`` crop of each utterance, each as
        (padded (B, S'), (B,) lengths)."""
        size = max(1, int(self.crop_seconds * self.sample_rate))
        crop, _, n = random_windows(wavs.unsqueeze(-1), wavs[..., None, :0].expand(-1, wavs.shape[1], 0),
                                    lengths, size, g)
        crop, rng, out = crop.squeeze(-1), numpy_rng(g), []
        for _ in range(2):
            views = [waveform_view(crop[i, : int(n[i])], rng, self.speeds, self.noise_snr_db,
                                   self.noise_prob_wave, self.reverb_prob) for i in range(len(n))]
            lens = torch.tensor([v.numel() for v in views], device=wavs.device)
            out.append((nn.utils.rnn.pad_sequence(views, batch_first=True), lens))
        return out

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        g = generator_from_global()
        pooled, recon = [], []
        for view, n_samples in self.waveform_views(wavs, lengths, g):
            x, n = self._frames(view, n_samples)
            altered_x, altered = self.alter(x, n, g)
            h = self._layers(altered_x, n)[-1]
            valid = masking.valid_mask(n, h.shape[1]).unsqueeze(-1)
            pooled.append((h * valid).sum(1) / n.clamp(min=1).unsqueeze(-1))
            if altered.any():
                recon.append(masked_l1(self.head(h), x, altered))
        z1, z2 = self.projection(pooled[0]), self.projection(pooled[1])
        contrastive, accuracy = nt_xent(z1, z2, self.temperature)
        reconstruction = torch.stack(recon).mean() if recon else contrastive.new_zeros(())
        return {"loss": contrastive + self.recon_weight * reconstruction,
                "contrastive": contrastive.detach(), "reconstruction": reconstruction.detach(),
                "accuracy": accuracy, "embedding_std": normalized_std(z1)}
