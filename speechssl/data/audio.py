"""Audio file reading (mono, float32, resampled) and atomic 16-bit WAV writing."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from speechssl.atomic import atomic_write
from speechssl.errors import AudioError

__all__ = ["MIN_SAMPLE_RATE", "load_audio", "save_audio"]

MIN_SAMPLE_RATE = 8000


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> torch.Tensor:
    """Read an audio file as a mono waveform at ``sample_rate``.

    Channels are averaged; the signal is resampled with
    :func:`torchaudio.functional.resample` when the file's rate differs.

    Args:
        path: audio file readable by soundfile (WAV, FLAC, ...).
        sample_rate: target sample rate in Hz.

    Returns:
        Tensor (T,), float32, values in [-1, 1] for PCM files.

    Raises:
        AudioError: missing, unreadable or corrupt file, zero samples, non-finite
            samples, or a file sample rate below 8000 Hz. The message starts with the path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found")
    # soundfile raises RuntimeError subclasses (LibsndfileError) for unreadable files
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path}: audio file has zero samples")
    if file_rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {file_rate} Hz is too low (minimum {MIN_SAMPLE_RATE} Hz)"
        )
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains non-finite samples (NaN or Inf)")
    wav = torch.from_numpy(data).mean(dim=1)
    if file_rate != sample_rate:
        wav = AF.resample(wav, orig_freq=int(file_rate), new_freq=int(sample_rate))
    return wav.contiguous()


def save_audio(
    path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int = 16000
) -> None:
    """Write a waveform to ``path`` as 16-bit PCM WAV, atomically (temp file + rename).

    Args:
        path: destination file; parent directories are created.
        wav: Tensor or array (T,) mono, or (T, C) multi-channel; float values in [-1, 1]
            (clipped to that range).
        sample_rate: sample rate in Hz written to the header.
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float32).numpy()
    data = np.asarray(wav, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise AudioError(f"{os.fspath(path)}: expected a (T,) or (T, C) waveform, got {data.shape}")
    data = np.clip(data, -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, data, int(sample_rate), subtype="PCM_16",
                                            format="WAV"))
