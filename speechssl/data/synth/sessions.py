"""Recording sessions of the synthetic corpus: everything between a voice and the file.

Real speaker tasks are hard because one speaker is recorded in many sessions (another
microphone, room, line or noise each time) and the long-term spectrum of a recording mixes
the speaker with the session. Here each speaker has :data:`SESSIONS_PER_SPEAKER` sessions
under each of two :data:`CONDITIONS` ("wild" for the speaker tasks and keywords, "studio"
for read and acted speech); a session is drawn once, from ``default_rng([corpus seed,
SESSION_CODE, speaker index, session index, conditions])``, and fixes:

* the microphone: a high-pass and three peaking filters (random centre, gain, width);
* the band: full band, telephone (300-3400 Hz band-pass with 8-bit mu-law companding, as
  G.711) or a low-pass as in low-quality recordings;
* the room: none, or an exponentially decaying noise impulse response (RT60, direct to
  reverberant ratio; one response per session, as one microphone position in one room);
* a stationary noise floor: a power-law spectrum of continuous exponent (white to brown)
  at a session SNR, with mains hum in some sessions;
* the recording level.

Utterances of one session share all of it; each draws its own noise samples and a small
level and SNR jitter. Every function here is pure given its arguments.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from . import augment as A

SESSIONS_PER_SPEAKER = 6
SESSION_CODE = 77  # keeps session generators apart from the items' (SUBSET_CODES < 77)
BANDS = ("full", "telephone", "lowpass")


@dataclass(frozen=True)
class Conditions:
    """How far a family of sessions strays from a clean recording."""

    code: str  # in the session id: <speaker>-<code><index>
    eq_sd_db: float  # spread of the microphone's peaking-filter gains
    band_weights: tuple[float, float, float]  # full, telephone, low-pass
    p_room: float
    rt60: tuple[float, float]
    snr_db: tuple[float, float]  # of the noise floor
    p_hum: float


# "wild": speaker tasks (SID, ASV, SD) and keywords, recorded anywhere, as VoxCeleb's videos
# and Speech Commands' crowd-sourced clips; "studio": read and acted speech (ASR/PR, IC, SF,
# ER, QbE, and so pre-training), closer to LibriSpeech or IEMOCAP: its sessions still differ
# (microphone, a room, a noise floor) but are never telephone or muffled.
CONDITIONS = {
    "wild": Conditions("s", 5.0, (0.55, 0.2, 0.25), 0.65, (0.15, 0.8), (8.0, 40.0), 0.2),
    "studio": Conditions("c", 2.5, (1.0, 0.0, 0.0), 0.4, (0.15, 0.45), (25.0, 45.0), 0.05),
}


def session_id(speaker: str, index: int, conditions: str = "wild") -> str:
    return f"{speaker}-{CONDITIONS[conditions].code}{index}"


@functools.lru_cache(maxsize=16384)
def plan_session(seed: int, speaker: str, speaker_index: int, index: int,
                 conditions: str = "wild") -> dict:
    """The parameters of session ``index`` of a speaker under ``conditions`` (a JSON-able
    dict, shared by every item of the session: read it, do not change it)."""
    c = CONDITIONS[conditions]
    rng = np.random.default_rng([seed, SESSION_CODE, speaker_index, index,
                                 list(CONDITIONS).index(conditions)])
    eq = [[round(float(math.exp(rng.uniform(math.log(150.0), math.log(7000.0)))), 1),
           round(float(np.clip(rng.normal(0.0, c.eq_sd_db), -12.0, 12.0)), 2),
           round(float(rng.uniform(0.5, 2.5)), 3)] for _ in range(3)]
    band = BANDS[int(rng.choice(len(BANDS), p=c.band_weights))]
    lowpass = round(float(math.exp(rng.uniform(math.log(3000.0), math.log(7000.0)))), 1)
    u_room, rt60, drr = rng.random(), float(rng.uniform(*c.rt60)), float(rng.uniform(-2.0, 10.0))
    u_hum, hum_f0 = rng.random(), 50.0 if rng.random() < 0.5 else 60.0
    out = {
        "id": session_id(speaker, index, conditions),
        "highpass": round(float(rng.uniform(40.0, 250.0)), 1),
        "eq": eq,
        "band": band,
        "level_db": round(float(rng.uniform(-32.0, -16.0)), 2),
        "noise_beta": round(float(rng.uniform(-0.5, 2.0)), 3),
        "snr_db": round(float(rng.uniform(*c.snr_db)), 2),
        "rir_seed": int(rng.integers(2**31 - 1)),
    }
    if band == "lowpass":
        out["lowpass"] = lowpass
    if u_room < c.p_room:
        out["rt60"], out["drr_db"] = round(rt60, 3), round(drr, 2)
    if u_hum < c.p_hum:
        out["hum_hz"] = hum_f0
    return out


def describe(session: dict) -> dict:
    """The session's parameters without the id and the generator seed (for meta.json)."""
    return {k: v for k, v in session.items() if k not in ("id", "rir_seed")}


def _peaking(f0: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One second-order section of a peaking equaliser (the audio EQ cookbook's biquad)."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * min(f0, 0.45 * sample_rate) / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    b = [1.0 + alpha * a, -2.0 * math.cos(w0), 1.0 - alpha * a]
    den = [1.0 + alpha / a, -2.0 * math.cos(w0), 1.0 - alpha / a]
    return np.array([[*(v / den[0] for v in b), 1.0, den[1] / den[0], den[2] / den[0]]])


def channel_filter(session: dict, sample_rate: int) -> np.ndarray:
    """The microphone and band of a session as second-order sections."""
    sos = [butter(2, session["highpass"], "highpass", fs=sample_rate, output="sos")]
    sos += [_peaking(f, g, q, sample_rate) for f, g, q in session["eq"]]
    if session["band"] == "telephone":
        sos.append(butter(4, [300.0, 3400.0], "bandpass", fs=sample_rate, output="sos"))
    elif session["band"] == "lowpass":
        sos.append(butter(6, session["lowpass"], "lowpass", fs=sample_rate, output="sos"))
    return np.concatenate(sos)


def mu_law(x: np.ndarray, bits: int = 8, mu: float = 255.0) -> np.ndarray:
    """Companded ``bits``-bit quantisation and expansion (G.711-like), in [-1, 1]."""
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    levels = 2 ** (bits - 1)
    y = np.round(y * levels) / levels
    return np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu


def room(x: np.ndarray, session: dict, sample_rate: int) -> np.ndarray:
    """Reverberate in the session's room (the same response for all its utterances); the
    direct path stays at lag 0, so alignments do not move."""
    if "rt60" not in session:
        return x
    rir = A.synthetic_rir(np.random.default_rng(session["rir_seed"]), sample_rate,
                          session["rt60"], direct_to_reverb_db=session["drr_db"])
    return A.reverberate(x, rir)


def noise_floor(n: int, session: dict, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Unit-power stationary noise of the session: power-law spectrum, plus mains hum."""
    noise = A.power_law_noise(n, rng, session["noise_beta"])
    if "hum_hz" in session:
        t = np.arange(n) / sample_rate
        hum = sum(np.sin(2 * np.pi * session["hum_hz"] * h * t + rng.uniform(0, 2 * np.pi)) / h
                  for h in (1, 2, 3))
        noise = noise + hum / math.sqrt(A.power(hum)) if n else noise
        noise = noise / math.sqrt(A.power(noise)) if A.power(noise) > 0 else noise
    return noise


def record(x: np.ndarray, session: dict, rng: np.random.Generator, sample_rate: int,
           snr_jitter_db: float = 0.0, floor: bool = True) -> np.ndarray:
    """Add the session's noise floor (unless ``floor`` is False) at its SNR (+ jitter), then
    pass everything through its microphone, band and line."""
    if floor and A.power(x) > 0:
        x = x + A.scale_to_snr(x, noise_floor(len(x), session, rng, sample_rate),
                               session["snr_db"] + snr_jitter_db)
    y = sosfilt(channel_filter(session, sample_rate), x)
    if session["band"] == "telephone":
        p = A.power(y)
        if p > 0:  # compand around a fixed line level, then back to the input's level
            g = 10 ** (-20 / 20) / math.sqrt(p)
            y = mu_law(y * g) / g
    return y
