"""TinyConv: a small convolutional encoder over log-mel frames, pre-trained by masked-frame
reconstruction (the objective of Mockingjay, Liu et al., 2020, on a much smaller model)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.frontend import HOP_SAMPLES, KaldiFrontend
from speechssl.upstream import Upstream, UpstreamOutput


class TinyConv(Upstream):
    """40-d log-mel frames -> linear -> ``num_layers`` residual 1-D convolutions.

    Hidden states: the projection and every convolution, each (B, T, hidden_size), one
    frame per 160 samples (10 ms). Padded frames are zeroed before every convolution, so
    an utterance gives the same features alone and padded in a batch.
    """

    modality = "audio"
    downsample_rate = HOP_SAMPLES
    sample_rate = 16000
    contract_options = {"hidden_size": 32, "num_layers": 2}  # small, for the contract test

    def __init__(self, hidden_size: int = 64, num_layers: int = 2, kernel_size: int = 5,
                 num_mel_bins: int = 40, mask_prob: float = 0.15):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ConfigError(f"upstream.kernel_size={kernel_size}: must be odd")
        self.frontend = KaldiFrontend("fbank", num_mel_bins=num_mel_bins, normalize=False)
        self.proj = nn.Linear(num_mel_bins, hidden_size)
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden_size, hidden_size, kernel_size, padding=kernel_size // 2)
            for _ in range(num_layers))
        self.head = nn.Linear(hidden_size, num_mel_bins)
        self.mask_prob = mask_prob

    def _encode(self, feats: Tensor, lengths: Tensor) -> list[Tensor]:
        """feats (B, T, F), lengths (B,) -> [(B, T, H)] * (num_layers + 1)."""
        valid = (torch.arange(feats.shape[1], device=feats.device) < lengths[:, None]).unsqueeze(-1)
        x = self.proj(feats) * valid
        hidden = [x]
        for conv in self.convs:
            x = (x + torch.relu(conv(x.transpose(1, 2)).transpose(1, 2))) * valid
            hidden.append(x)
        return hidden

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        """wavs (B, S) float at 16 kHz, lengths (B,) samples -> hidden states and frame counts."""
        feats, frames = self.frontend(wavs, lengths)
        return UpstreamOutput(hidden_states=self._encode(feats, frames), lengths=frames)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """L1 reconstruction of the log-mel frames that were zeroed at the input."""
        feats, frames = self.frontend(wavs, lengths)
        valid = torch.arange(feats.shape[1], device=feats.device) < frames[:, None]
        masked = (torch.rand(feats.shape[:2], device=feats.device) < self.mask_prob) & valid
        inputs = feats.masked_fill(masked.unsqueeze(-1), 0.0)
        pred = self.head(self._encode(inputs, frames)[-1])
        err = (pred - feats).abs().mean(-1)
        loss = (err * masked).sum() / masked.sum().clamp(min=1)
        return {"loss": loss, "masked_frames": masked.sum().float()}
