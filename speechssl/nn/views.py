"""Augmented views of audio for the joint-embedding upstreams (BYOL-A, DeLoRes, Speech
SimCLR) and random windows of frame sequences (also the probes' training crops).

Waveform views reuse the synthetic corpus's own augmentations (speechssl/data/synth/
augment.py: additive noise at an SNR, a synthetic room impulse response, speed perturbation).
Log-mel views follow BYOL-A (Niizumi et al., 2021, "BYOL for Audio"): log-mixup-exp with a
past clip and a random resize crop."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def random_windows(features: Tensor, labels: Tensor, lengths: Tensor, size: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """A window of at most ``size`` frames from each sequence of a batch, at a uniformly
    random start within it (s3prl trains diarization on fixed-length chunks): (B, T, D)
    features and (B, T, S) labels -> the same cut to (B, min(T, size), .) and the lengths
    within the windows. A sequence no longer than ``size`` is kept whole."""
    if features.shape[1] <= size:
        return features, labels, lengths
    room = (lengths - size).clamp(min=0).cpu()
    starts = (torch.rand(len(room), generator=generator) * (room + 1)).floor().long()
    index = (starts.unsqueeze(1) + torch.arange(size)).to(features.device)  # (B, size)
    index = index.clamp(max=features.shape[1] - 1)
    take = lambda x: x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # noqa: E731
    return take(features), take(labels), lengths.clamp(max=size)


def segments(features: Tensor, lengths: Tensor, size: int, generator: torch.Generator
             ) -> Tensor:
    """Exactly ``size`` frames of each sequence, (B, T, D) -> (B, size, D): a random window
    (:func:`random_windows`), zero-filled past the end of a shorter sequence."""
    x, _, n = random_windows(features, features[..., :0], lengths, size, generator)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < n.to(x.device)[:, None]
    x = x * valid.unsqueeze(-1)
    return F.pad(x, (0, 0, 0, size - x.shape[1]))


def log_mixup_exp(x: Tensor, others: Tensor, alpha: float, generator: torch.Generator
                  ) -> Tensor:
    """BYOL-A's mixup of log-mel segments: log((1 - l) exp(x) + l exp(other)), l ~ U(0, alpha)
    per segment. x, others: (B, T, F)."""
    lam = (torch.rand(x.shape[0], generator=generator) * alpha).to(x)[:, None, None]
    return torch.logaddexp(torch.log1p(-lam) + x, torch.log(lam.clamp(min=1e-12)) + others)


def random_resize_crop(x: Tensor, generator: torch.Generator, virtual_scale: float = 1.5,
                       time_scale: tuple[float, float] = (0.6, 1.5),
                       freq_scale: tuple[float, float] = (0.6, 1.5)) -> Tensor:
    """BYOL-A's random resize crop of (B, T, F) segments: each is placed at the centre of a
    zero canvas ``virtual_scale`` times as long, a box of ``time_scale`` x ``freq_scale`` of
    its size (clipped to the canvas) is cut at a random place and resized back to (T, F)
    (bilinear)."""
    B, T, Fq = x.shape
    canvas_t = int(T * virtual_scale)
    canvas = x.new_zeros(B, canvas_t, Fq)
    off = (canvas_t - T) // 2
    canvas[:, off:off + T] = x
    u = torch.rand(B, 4, generator=generator)
    out = []
    for i in range(B):
        h = min(canvas_t, max(1, int(T * (time_scale[0] + u[i, 0] * (time_scale[1]
                                                                     - time_scale[0])))))
        w = min(Fq, max(1, int(Fq * (freq_scale[0] + u[i, 1] * (freq_scale[1] - freq_scale[0])))))
        t0 = int(u[i, 2] * (canvas_t - h + 1))
        f0 = int(u[i, 3] * (Fq - w + 1))
        box = canvas[i, t0:t0 + h, f0:f0 + w]
        out.append(F.interpolate(box[None, None], size=(T, Fq), mode="bilinear",
                                 align_corners=True)[0, 0])
    return torch.stack(out)


def waveform_view(wav: Tensor, rng: np.random.Generator, speeds: tuple[float, ...] = (0.9, 1.0, 1.1),
                  noise_snr_db: tuple[float, float] = (5.0, 20.0), noise_prob: float = 0.5,
                  reverb_prob: float = 0.5, rt60: tuple[float, float] = (0.2, 0.6)) -> Tensor:
    """One augmented copy of a (S,) waveform with the corpus's augmentations: a speed
    factor drawn from ``speeds`` (length changes), reverberation by a synthetic room
    (probability ``reverb_prob``, RT60 uniform in ``rt60``), white, pink or brown noise at an
    SNR uniform in ``noise_snr_db`` (probability ``noise_prob``)."""
    from speechssl.data.synth.augment import add_noise, reverberate, speed_perturb, synthetic_rir

    y = wav.detach().float().cpu()
    speed = float(speeds[int(rng.integers(len(speeds)))])
    if speed != 1.0:
        y = speed_perturb(y, speed)
    if rng.random() < reverb_prob:
        y = reverberate(y, synthetic_rir(rng, rt60=float(rng.uniform(*rt60))))
    if rng.random() < noise_prob:
        kind = ("white", "pink", "brown")[int(rng.integers(3))]
        y = add_noise(y, rng, float(rng.uniform(*noise_snr_db)), kind)
    return y.to(wav.device)


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded by one draw of ``generator`` (for the numpy augmentations)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))
