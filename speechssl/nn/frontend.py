"""Kaldi-compliant acoustic features (torchaudio.compliance.kaldi) with utterance CMVN."""

from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from speechssl.errors import ConfigError

WINDOW_SAMPLES = 400  # 25 ms at 16 kHz
HOP_SAMPLES = 160  # 10 ms at 16 kHz
KINDS = ("fbank", "mfcc", "spectrogram")


def num_frames(num_samples: Tensor) -> Tensor:
    """Frames Kaldi produces (snip_edges=True) for inputs padded up to one window."""
    n = num_samples.clamp(min=WINDOW_SAMPLES)
    return 1 + torch.div(n - WINDOW_SAMPLES, HOP_SAMPLES, rounding_mode="floor")


def pad_sequence(seqs: list[Tensor]) -> Tensor:
    """[(T_i, D)] -> (B, T_max, D), zero padded."""
    return nn.utils.rnn.pad_sequence(seqs, batch_first=True)


def cmvn(feats: Tensor) -> Tensor:
    """Utterance-level mean and variance normalisation of (T, D) features."""
    mean = feats.mean(dim=0, keepdim=True)
    std = feats.std(dim=0, keepdim=True, unbiased=False)
    return (feats - mean) / (std + 1e-5)


class KaldiFrontend(nn.Module):
    """Waveforms (B, T) at 16 kHz -> features (B, frames, dim) with per-utterance CMVN.

    kind: "fbank" (log-mel, ``num_mel_bins``), "mfcc" (``num_ceps``), "spectrogram"
    (log power, 257 bins). 25 ms windows, 10 ms hop, so 160 samples per frame.
    """

    def __init__(self, kind: str = "fbank", num_mel_bins: int = 80, num_ceps: int = 13,
                 deltas: bool = False, normalize: bool = True, sample_rate: int = 16000):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"unknown feature kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        self.kind, self.num_mel_bins, self.num_ceps = kind, num_mel_bins, num_ceps
        self.deltas, self.normalize, self.sample_rate = deltas, normalize, sample_rate

    @property
    def dim(self) -> int:
        base = {"fbank": self.num_mel_bins, "mfcc": self.num_ceps, "spectrogram": 257}[self.kind]
        return base * (3 if self.deltas else 1)

    def one(self, wav: Tensor) -> Tensor:
        """(T,) -> (frames, dim)."""
        if wav.numel() < WINDOW_SAMPLES:
            wav = nn.functional.pad(wav, (0, WINDOW_SAMPLES - wav.numel()))
        w = wav.unsqueeze(0).float()
        sr = self.sample_rate
        if self.kind == "fbank":
            f = kaldi.fbank(w, num_mel_bins=self.num_mel_bins, sample_frequency=sr)
        elif self.kind == "mfcc":
            f = kaldi.mfcc(w, num_mel_bins=max(23, self.num_ceps), num_ceps=self.num_ceps,
                           sample_frequency=sr)
        else:
            f = kaldi.spectrogram(w, sample_frequency=sr)
        if self.deltas:
            d1 = _deltas(f)
            f = torch.cat([f, d1, _deltas(d1)], dim=-1)
        return cmvn(f) if self.normalize else f

    @torch.no_grad()
    def forward(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats = [self.one(wavs[i, : int(lengths[i])]) for i in range(wavs.shape[0])]
        out_lengths = torch.tensor([f.shape[0] for f in feats], device=wavs.device)
        return pad_sequence(feats).to(wavs.device), out_lengths


def _deltas(f: Tensor) -> Tensor:
    """Kaldi-style regression deltas of (T, D) features, window 2."""
    import torchaudio.functional as F

    return F.compute_deltas(f.T.unsqueeze(0), win_length=5).squeeze(0).T
