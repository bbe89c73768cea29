"""Pure augmentation functions for 1-D float waveforms.

All functions take numpy arrays (or torch tensors, converted transparently and
returned as tensors of the input dtype) and, where random, an explicit
``numpy.random.Generator``; nothing here touches global random state.

* :func:`power_law_noise` / :func:`colored_noise` / :func:`add_noise` - additive noise at an
  exact SNR
* :func:`synthetic_rir` / :func:`reverberate` - exponentially decaying noise RIR
* :func:`speed_perturb` - resampling speed change (length scales by ``1 / factor``)
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.signal import fftconvolve, firwin, resample_poly

NOISE_KINDS = ("white", "pink", "brown", "blue")


def _to_numpy(x):
    """Return (float64 numpy array, restore-function)."""
    if isinstance(x, np.ndarray):
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return x.astype(np.float64, copy=False), (lambda y: y.astype(dtype, copy=False))
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        dtype, device = x.dtype, x.device
        arr = x.detach().cpu().numpy().astype(np.float64)
        return arr, (lambda y: torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=dtype))
    arr = np.asarray(x, dtype=np.float64)
    return arr, (lambda y: y.astype(np.float32, copy=False))


def power(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def power_law_noise(n: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """Unit-power noise of length ``n`` with a 1/f^beta power spectrum (any real beta)."""
    if n <= 0:
        return np.zeros(0)
    if beta == 0.0:
        w = rng.standard_normal(n)
    else:  # shaped on a fast FFT length (a length with a large prime factor is 100x slower)
        m = next_fast_len(n, real=True)
        spec = rfft(rng.standard_normal(m))
        f = np.fft.rfftfreq(m)
        f[0] = f[1] if m > 1 else 1.0
        spec *= f ** (-beta / 2.0)
        w = irfft(spec, m)[:n]
    w = w - w.mean()
    p = power(w)
    return w / np.sqrt(p) if p > 0 else w


def colored_noise(n: int, rng: np.random.Generator, kind: str = "white") -> np.ndarray:
    """Unit-power noise of length ``n`` with a 1/f^beta spectrum.

    ``kind``: white (beta 0), pink (1), brown (2) or blue (-1).
    """
    betas = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}
    if kind not in betas:
        raise ValueError(f"unknown noise kind {kind!r}; valid: {sorted(betas)}")
    return power_law_noise(n, rng, betas[kind])


def scale_to_snr(signal, noise, snr_db: float):
    """Scale ``noise`` so that 10*log10(P_signal / P_noise) == snr_db exactly."""
    s, _ = _to_numpy(signal)
    nz, back = _to_numpy(noise)
    ps, pn = power(s), power(nz)
    if pn <= 0:
        raise ValueError("noise has zero power")
    gain = np.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return back(nz * gain)


def add_noise(x, rng: np.random.Generator, snr_db: float, kind: str = "white", noise=None):
    """Add noise at ``snr_db`` (power ratio over the whole signal).

    ``noise`` (array, tiled / cropped to length) overrides ``kind`` (e.g. babble).
    """
    s, back = _to_numpy(x)
    n = len(s)
    if noise is None:
        nz = colored_noise(n, rng, kind)
    else:
        nz, _ = _to_numpy(noise)
        if len(nz) == 0:
            raise ValueError("empty noise array")
        if len(nz) < n:
            nz = np.tile(nz, int(np.ceil(n / len(nz))))
        start = int(rng.integers(0, len(nz) - n + 1))
        nz = nz[start:start + n]
    if power(s) <= 0:
        return back(s.copy())
    return back(s + scale_to_snr(s, nz, snr_db))


def snr_db(signal, noisy) -> float:
    """Measured SNR of ``noisy`` w.r.t. the clean ``signal``."""
    s, _ = _to_numpy(signal)
    y, _ = _to_numpy(noisy)
    return float(10.0 * np.log10(power(s) / power(y - s)))


def synthetic_rir(rng: np.random.Generator, sample_rate: int = 16000, rt60: float = 0.4,
                  direct_to_reverb_db: float = 0.0, predelay: float = 0.004) -> np.ndarray:
    """Exponentially decaying noise room impulse response, unit energy.

    The first sample is the direct path; the diffuse tail starts after ``predelay``
    seconds and decays by 60 dB in ``rt60`` seconds.  ``direct_to_reverb_db`` sets the
    energy ratio of direct path to tail.  Length is ``rt60`` seconds (at least 2 samples).
    """
    if rt60 <= 0:
        raise ValueError("rt60 must be positive")
    n = max(2, int(round(rt60 * sample_rate)))
    t = np.arange(n) / sample_rate
    decay = np.exp(-6.907755278982137 * t / rt60)  # ln(1000): 60 dB amplitude decay at rt60
    tail = rng.standard_normal(n) * decay
    d = max(1, int(round(predelay * sample_rate)))
    tail[:d] = 0.0
    # light low-pass of the tail (air / wall absorption)
    tail = np.convolve(tail, [0.5, 0.35, 0.15])[:n]
    e_tail = float(np.sum(tail ** 2))
    rir = np.zeros(n)
    if e_tail > 0:
        rir[:] = tail / np.sqrt(e_tail) * np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0))
    rir[0] = 1.0
    return rir / np.sqrt(np.sum(rir ** 2))


def reverberate(x, rir, keep_level: bool = True):
    """Convolve with ``rir``, keeping the input length (tail cut) and, by default, its RMS."""
    s, back = _to_numpy(x)
    h, _ = _to_numpy(rir)
    if len(s) == 0:
        return back(s.copy())
    y = fftconvolve(s, h)[: len(s)]
    if keep_level:
        ps, py = power(s), power(y)
        if py > 0:
            y = y * np.sqrt(ps / py)
    return back(y)


@functools.lru_cache(maxsize=64)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR that ``scipy.signal.resample_poly`` designs for ``up / down`` (its
    default Kaiser window), made once: designing it costs as much as filtering 3 s."""
    rate = max(up, down)
    return firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))


def resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` (the same samples), with its filter cached."""
    return resample_poly(x, up, down, window=_resampling_filter(up, down))


def speed_factor_fraction(factor: float, max_denominator: int = 100) -> Fraction:
    return Fraction(factor).limit_denominator(max_denominator)


def speed_perturb(x, factor: float, max_denominator: int = 100):
    """Play ``x`` ``factor`` times faster (pitch changes too, like sox ``speed``).

    The output has ``ceil(len(x) / factor)`` samples, with ``factor`` rounded to a
    fraction with denominator <= ``max_denominator`` (see :func:`speed_factor_fraction`).
    """
    if factor <= 0:
        raise ValueError("factor must be positive")
    s, back = _to_numpy(x)
    fr = speed_factor_fraction(factor, max_denominator)
    if fr == 1 or len(s) == 0:
        return back(s.copy())
    # new length = len * down / up with up = numerator (old rate), down = denominator
    y = resample(s, fr.denominator, fr.numerator)
    return back(y)


def speed_perturbed_length(n: int, factor: float, max_denominator: int = 100) -> int:
    fr = speed_factor_fraction(factor, max_denominator)
    if fr == 1 or n == 0:
        return n
    return -(-n * fr.denominator // fr.numerator)


def babble(sources: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of unit-power ``sources`` at random circular offsets, length ``n``, unit power."""
    out = np.zeros(n)
    for src in sources:
        src = np.asarray(src, dtype=np.float64)
        if len(src) == 0 or power(src) <= 0:
            continue
        reps = int(np.ceil(n / len(src))) + 1
        tiled = np.tile(src / np.sqrt(power(src)), reps)
        off = int(rng.integers(0, len(src)))
        out += tiled[off:off + n] * (10.0 ** (rng.uniform(-3, 3) / 20.0))
    p = power(out)
    return out / np.sqrt(p) if p > 0 else out
