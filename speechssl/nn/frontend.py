"""Kaldi-compliant acoustic features (torchaudio.compliance.kaldi) with utterance or corpus
CMVN, and the stacked log-mel feature encoder of the masked-prediction models' CPU option."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask

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


CMVN_MODES = ("utterance", "global", "none")


class GlobalCMVN(nn.Module):
    """Corpus-level mean and variance normalisation of (B, T, D) features.

    While training, the statistics of every batch's valid frames are accumulated (exact
    running sums, so the result is the mean/variance over all frames seen, as Kaldi's
    global CMVN); the features are normalised with the statistics so far. The sums are
    buffers, so they travel with the checkpoint. Unlike utterance CMVN it keeps what is
    constant within an utterance (spectral tilt, level), which a mean-pooled probe reads.
    Before any training (count 0) it is the identity. Under torch.distributed the batch sums
    of all ranks are added (one all-reduce), so every rank holds the same statistics."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(dim, dtype=torch.float64))

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        valid = valid_mask(lengths, feats.shape[1])
        if self.training:
            frames = feats[valid].double()
            sums = torch.cat([frames.new_tensor([frames.shape[0]]), frames.sum(0),
                              (frames**2).sum(0)])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(sums)
            dim = self.total.shape[0]
            self.count += sums[0]
            self.total += sums[1:1 + dim]
            self.total_sq += sums[1 + dim:]
        if self.count == 0:
            return feats
        mean = self.total / self.count
        std = (self.total_sq / self.count - mean**2).clamp(min=1e-10).sqrt()
        out = (feats - mean.to(feats.dtype)) / (std.to(feats.dtype) + 1e-5)
        return out * valid.unsqueeze(-1)


class LogMel(nn.Module):
    """Waveforms -> (B, T, num_mel_bins) log-mel with ``cmvn`` "utterance" (per-utterance
    statistics), "global" (corpus statistics learned while pre-training: GlobalCMVN) or
    "none": the input block of the fbank-based upstreams."""

    def __init__(self, num_mel_bins: int = 80, cmvn: str = "utterance"):
        super().__init__()
        if cmvn not in CMVN_MODES:
            raise ConfigError(f"cmvn={cmvn!r}; valid values: {', '.join(CMVN_MODES)}")
        self.kaldi = KaldiFrontend("fbank", num_mel_bins=num_mel_bins,
                                   normalize=cmvn == "utterance")
        self.global_cmvn = GlobalCMVN(num_mel_bins) if cmvn == "global" else None

    def forward(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, n = self.kaldi(wavs, lengths)
        if self.global_cmvn is not None:
            feats = self.global_cmvn(feats, n)
        return feats, n


def stack_frames(feats: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Concatenate k consecutive frames: (B, T, D) -> (B, ceil(T/k), k*D), lengths ceil(n/k).
    The last group of each sequence is zero-filled past its end (padding is zero already)."""
    if k == 1:
        return feats, lengths
    B, T, D = feats.shape
    valid = valid_mask(lengths, T).unsqueeze(-1)
    feats = nn.functional.pad(feats * valid, (0, 0, 0, (-T) % k))
    return feats.reshape(B, -1, k * D), torch.div(lengths + k - 1, k, rounding_mode="floor")


class StackedLogMel(nn.Module):
    """The log-mel feature encoder of the masked-prediction models on a CPU budget
    (MelHuBERT, Lin et al., 2023): ``stack`` consecutive 10 ms log-mel frames of
    ``num_mel_bins`` (corpus CMVN learned while pre-training, ``cmvn``) side by side, so
    one frame is ``160 * stack`` samples, as the conv feature encoder's stride. Same
    interface as :class:`speechssl.nn.conv_encoder.ConvFeatureEncoder`: forward((B, S),
    (B,)) -> (B, T, channels), (B,) frames; ``stride``, ``output_lengths``; no parameters
    (the global CMVN statistics are buffers)."""

    def __init__(self, num_mel_bins: int = 80, stack: int = 2, cmvn: str = "global"):
        super().__init__()
        if stack < 1 or num_mel_bins < 1:
            raise ConfigError(f"upstream.mel_stack={stack} and upstream.mel_bins={num_mel_bins} "
                              f"must be >= 1")
        self.logmel = LogMel(num_mel_bins, cmvn)
        self.stack = stack
        self.channels = num_mel_bins * stack

    @property
    def stride(self) -> int:
        return HOP_SAMPLES * self.stack

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(num_frames(lengths) + self.stack - 1, self.stack, rounding_mode="floor")

    def forward(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, n = self.logmel(wavs, lengths)
        return stack_frames(feats, n, self.stack)


def _deltas(f: Tensor) -> Tensor:
    """Kaldi-style regression deltas of (T, D) features, window 2."""
    import torchaudio.functional as F

    return F.compute_deltas(f.T.unsqueeze(0), win_length=5).squeeze(0).T
