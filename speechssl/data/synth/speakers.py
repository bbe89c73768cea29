"""Speaker inventory of the synthetic corpus and the eSpeak voice variants for it.

Each speaker is an eSpeak NG en-us voice with a private *voice variant* file. Its
parameters are drawn from continuous distributions of what eSpeak NG exposes, so that
speakers differ by degrees, as people do, and not by a few settings on a grid:

* per-formant frequency, strength and width profile (formants 0..8), with a
  vocal-tract-length-like scale on formants 1..5 (larger for female-like voices);
* base pitch and pitch range (log-normal around a male- or female-like centre);
* breathiness (a per-formant breath profile, for about a third of the voices);
* spectral tilt (eSpeak's ``tone`` equalisation), consonant and voicing strength;
* speaking rate and intonation range (applied at synthesis time).

A speaker's variant file (:func:`variant_text`) is handed to eSpeak NG at each synthesis
(:meth:`speechssl.data.synth.espeak.Espeak.synth_aligned`): eSpeak lists at most 350
voices, far fewer than a corpus has speakers.

The inventory is fixed (independent of the corpus seed): speaker ``i`` is drawn from its own
generator ``default_rng([INVENTORY_SEED, i])`` and its split follows from ``i``, so a corpus
size with ``n`` speakers uses the first ``n`` of :data:`SPEAKERS` and speaker ids mean the
same thing in every corpus. Speakers come in (male-like, female-like) pairs and each pair
goes to one split (4 of every 6 pairs train, 1 dev, 1 test): every split is
gender-balanced.

eSpeak's ``flutter`` and ``roughness`` are always 0: their internal state carries over
between utterances, which would make the audio depend on what the worker synthesized
before (breaking worker-count independence).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np

INVENTORY_SEED = 20261206
MAX_SPEAKERS = 1200  # the largest corpus size's inventory (speechssl.data.synth.generate)
SPLIT_OF_PAIR = ("train", "train", "train", "train", "dev", "test")  # pair index mod 6
VOICE = "en-us"  # the eSpeak NG voice every speaker's variant applies to
TONE_FREQS = (600, 2400, 4000, 6000)  # Hz of eSpeak's ``tone`` (frequency, amplitude) pairs


@dataclass(frozen=True)
class Speaker:
    id: str
    gender: str
    pitch: int  # base pitch in Hz
    pitch_top: int  # top of the pitch range in Hz
    rate: int  # words per minute
    intonation: int  # eSpeak's pitch-range parameter (0..100, 50 = the voice's own)
    formant: float  # formant frequency scale on formants 1..5 (vocal-tract-length-like)
    formants: tuple[tuple[int, int, int], ...]  # (freq %, strength %, width %) of formants 0..8
    breath: tuple[int, ...]  # per-formant breath (empty: none)
    tone: tuple[int, ...]  # (freq, amp) pairs: spectral tilt / equalisation
    consonants: int
    voicing: int
    split: str

    def meta(self) -> dict:
        d = asdict(self)
        d.pop("id")
        d["voice"] = VOICE
        return d


def _draw_speaker(i: int) -> Speaker:
    rng = np.random.default_rng([INVENTORY_SEED, i])
    female = i % 2 == 1
    scale = float(np.clip(rng.normal(1.13 if female else 0.98, 0.045), 0.85, 1.3))
    centre = 200.0 if female else 110.0
    pitch = int(np.clip(round(math.exp(rng.normal(math.log(centre), 0.14))),
                        140 if female else 70, 300 if female else 175))
    span = float(rng.uniform(1.2, 1.75))
    width_centre = 135.0 if female else 100.0
    formants = tuple(
        (int(round(100 * float(np.clip(rng.normal(1.0, 0.035), 0.9, 1.1)))),
         int(np.clip(round(rng.normal(100, 18)), 55, 150)),
         int(np.clip(round(rng.normal(width_centre, 22)), 60, 200)))
        for _ in range(9))
    breathy, strength = rng.random() < 0.35, float(rng.uniform(1.0, 4.0))
    profile = (0.0, 0.6, 1.0, 1.0, 0.9, 0.8, 0.7, 0.5)
    breath = tuple(int(round(strength * w * rng.uniform(0.7, 1.3))) for w in profile)
    tilt = float(rng.normal(0.0, 0.35))  # dB-like slope per decade of frequency, in amplitude
    tone = []
    for f in TONE_FREQS:
        amp = 100 * math.exp(tilt * math.log10(f / TONE_FREQS[0]) * 2.3 + rng.normal(0, 0.12))
        tone += [f, int(np.clip(round(amp), 20, 250))]
    rate = int(np.clip(round(math.exp(rng.normal(math.log(170), 0.11))), 125, 230))
    return Speaker(
        id=f"spk{i:04d}", gender="female" if female else "male",
        pitch=pitch, pitch_top=int(round(pitch * span)), rate=rate,
        intonation=int(np.clip(round(rng.normal(50, 10)), 25, 75)), formant=round(scale, 4),
        formants=formants, breath=breath if breathy else (), tone=tuple(tone),
        consonants=int(np.clip(round(rng.normal(100, 15)), 60, 140)),
        voicing=int(np.clip(round(rng.normal(100, 8)), 80, 120)),
        split=SPLIT_OF_PAIR[(i // 2) % len(SPLIT_OF_PAIR)])


SPEAKERS: tuple[Speaker, ...] = tuple(_draw_speaker(i) for i in range(MAX_SPEAKERS))
SPEAKER_BY_ID = {s.id: s for s in SPEAKERS}
SPEAKER_INDEX = {s.id: i for i, s in enumerate(SPEAKERS)}


def inventory(n: int) -> tuple[Speaker, ...]:
    """The first ``n`` speakers (an even number, at most :data:`MAX_SPEAKERS`)."""
    if not 2 <= n <= MAX_SPEAKERS or n % 2:
        raise ValueError(f"a speaker inventory is an even number in [2, {MAX_SPEAKERS}], got {n}")
    return SPEAKERS[:n]


def speaker_splits(n: int) -> dict[str, list[str]]:
    """Speaker ids of each split among the first ``n`` speakers."""
    spk = inventory(n)
    return {sp: [s.id for s in spk if s.split == sp] for sp in ("train", "dev", "test")}


@functools.cache
def variant_text(spk: Speaker) -> str:
    """The eSpeak NG voice variant file of a speaker (applied on top of :data:`VOICE`)."""
    lines = ["language variant", f"name {spk.id}", f"gender {spk.gender}", "",
             f"pitch {spk.pitch} {spk.pitch_top}", "flutter 0", "roughness 0"]
    for k, (freq, height, width) in enumerate(spk.formants):
        if 1 <= k <= 5:
            freq = int(round(freq * spk.formant))
        lines.append(f"formant {k} {freq} {height} {width}")
    if spk.breath:
        lines.append("breath " + " ".join(map(str, spk.breath)))
    lines.append("tone " + " ".join(map(str, spk.tone)))
    lines.append(f"consonants {spk.consonants}")
    lines.append(f"voicing {spk.voicing}")
    return "\n".join(lines) + "\n"
