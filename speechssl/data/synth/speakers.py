"""Fixed speaker inventory of the synthetic corpus and the eSpeak voice variants for it.

Each speaker is an eSpeak NG en-us voice with a private *voice variant* file that sets
its timbre (per-formant frequency / strength / width profile and voice quality), a
vocal-tract-length-like formant scale and a base pitch; the speaking rate is applied
at synthesis time.  The variant files are written into an overlay of the
espeak-ng-data directory (symlinks to the shipped data plus our ``voices/!v/ssl*``
files), stored under the system temp dir keyed by a hash of its content, so every
process (and every corpus) sees the same path for the same voices.

The inventory and its train/dev/test partition are fixed (independent of the corpus
seed) so that speaker ids mean the same thing in every corpus.

eSpeak's ``flutter`` and ``roughness`` are always 0: their internal state carries over
between utterances, which would make the audio depend on what the worker synthesized
before (breaking worker-count independence).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .espeak import default_data_dir


@dataclass(frozen=True)
class Timbre:
    name: str
    gender: str
    # (freq %, strength %, width %) for formants 0..8
    formants: tuple[tuple[int, int, int], ...]
    pitch_levels: tuple[int, int, int]  # base pitch (Hz) options
    pitch_span: float  # top of pitch range = base * span
    breath: tuple[int, ...]
    tone: tuple[int, ...]  # eSpeak "tone" (freq, amp) pairs: spectral tilt / equalisation
    echo: tuple[int, int]
    consonants: int
    voicing: int


def _f(*rows):
    return tuple(tuple(r) for r in rows)


# Hand-designed timbres (4 male-like, 4 female-like).
TIMBRES: tuple[Timbre, ...] = (
    Timbre("bass", "male",
           _f((100, 100, 100), (92, 105, 95), (94, 100, 100), (95, 95, 105), (96, 90, 100),
              (96, 85, 100), (100, 80, 100), (100, 100, 100), (100, 100, 100)),
           (78, 92, 106), 1.35, (), (600, 140, 2400, 100, 4000, 60, 6000, 40), (0, 0), 90, 100),
    Timbre("bright", "male",
           _f((100, 100, 100), (98, 95, 110), (103, 110, 100), (102, 115, 100), (100, 110, 100),
              (100, 105, 100), (100, 90, 100), (100, 100, 100), (100, 100, 100)),
           (95, 110, 125), 1.5, (), (600, 80, 2400, 130, 4000, 150, 6000, 120), (0, 0), 110, 100),
    Timbre("husky", "male",
           _f((100, 100, 100), (96, 100, 130), (97, 95, 130), (97, 90, 120), (98, 80, 110),
              (98, 75, 100), (100, 70, 100), (100, 100, 100), (100, 100, 100)),
           (85, 100, 115), 1.3, (0, 3, 4, 4, 3, 2, 2, 1), (), (0, 0), 80, 90),
    Timbre("nasal", "male",
           _f((110, 120, 100), (100, 85, 90), (99, 105, 90), (100, 110, 90), (101, 100, 100),
              (101, 95, 100), (100, 90, 100), (100, 100, 100), (100, 100, 100)),
           (90, 105, 120), 1.45, (), (600, 100, 1500, 130, 3000, 90, 6000, 70), (90, 8), 100, 100),
    Timbre("clear", "female",
           _f((105, 80, 150), (118, 80, 150), (115, 75, 150), (112, 80, 150), (112, 80, 150),
              (112, 80, 150), (110, 75, 150), (110, 70, 150), (110, 70, 150)),
           (165, 190, 215), 1.5, (), (600, 90, 2400, 120, 4000, 120, 6000, 100), (0, 0), 100, 100),
    Timbre("soft", "female",
           _f((110, 80, 150), (122, 75, 170), (125, 70, 160), (118, 75, 150), (118, 70, 150),
              (115, 65, 150), (110, 60, 150), (110, 70, 150), (110, 70, 150)),
           (170, 195, 225), 1.4, (0, 2, 3, 3, 3, 3, 3, 2), (600, 130, 2400, 80, 4000, 50, 6000, 30), (0, 0), 80, 100),
    Timbre("sharp", "female",
           _f((105, 90, 130), (115, 90, 120), (130, 85, 120), (125, 95, 130), (122, 95, 130),
              (120, 90, 130), (115, 80, 130), (110, 70, 150), (110, 70, 150)),
           (180, 205, 235), 1.6, (), (600, 70, 2400, 130, 4000, 160, 6000, 150), (0, 0), 120, 100),
    Timbre("warm", "female",
           _f((100, 90, 140), (112, 95, 140), (110, 85, 140), (108, 80, 140), (108, 75, 140),
              (106, 70, 140), (105, 70, 140), (105, 70, 150), (105, 70, 150)),
           (155, 175, 200), 1.35, (), (600, 120, 2400, 100, 4000, 70, 6000, 50), (110, 6), 90, 100),
)

FORMANT_SCALES = (0.94, 1.06)
RATES = (150, 172, 195)  # words per minute
SPLIT_SIZES = {"train": 32, "dev": 8, "test": 8}


@dataclass(frozen=True)
class Speaker:
    id: str
    variant: str  # eSpeak variant file name (voice = "en-us+<variant>")
    timbre: str
    gender: str
    pitch: int  # base pitch in Hz
    pitch_top: int
    rate: int  # words per minute
    formant: float  # formant frequency scale (vocal-tract-length-like)
    split: str

    @property
    def voice(self) -> str:
        return f"en-us+{self.variant}"

    def meta(self) -> dict:
        d = asdict(self)
        d.pop("id")
        d["voice"] = self.voice
        return d


def _build_speakers() -> tuple[Speaker, ...]:
    raw = []
    for t_i, t in enumerate(TIMBRES):
        for j in range(6):
            pitch = t.pitch_levels[j % 3]
            scale = FORMANT_SCALES[j // 3]
            rate = RATES[(j + t_i) % 3]
            raw.append((t, pitch, scale, rate))
    # fixed, gender-balanced partition: within each gender, every 3rd..
    rng = np.random.default_rng(20240601)
    split_of = {}
    for gender in ("male", "female"):
        idx = [i for i, r in enumerate(raw) if r[0].gender == gender]
        # round-robin over timbres so each split sees many timbres
        idx = sorted(idx, key=lambda i: (i % 6, i // 6))
        perm = [idx[k] for k in rng.permutation(len(idx))]
        n_dev, n_test = SPLIT_SIZES["dev"] // 2, SPLIT_SIZES["test"] // 2
        for k, i in enumerate(perm):
            split_of[i] = "dev" if k < n_dev else ("test" if k < n_dev + n_test else "train")
    out = []
    for i, (t, pitch, scale, rate) in enumerate(raw):
        out.append(Speaker(
            id=f"spk{i:02d}", variant=f"ssl{i:02d}", timbre=t.name, gender=t.gender,
            pitch=int(pitch), pitch_top=int(round(pitch * t.pitch_span)), rate=int(rate),
            formant=float(scale), split=split_of[i],
        ))
    return tuple(out)


SPEAKERS: tuple[Speaker, ...] = _build_speakers()
SPEAKER_BY_ID = {s.id: s for s in SPEAKERS}


def speaker_splits() -> dict[str, list[str]]:
    return {sp: [s.id for s in SPEAKERS if s.split == sp] for sp in ("train", "dev", "test")}


def variant_text(spk: Speaker) -> str:
    t = next(t for t in TIMBRES if t.name == spk.timbre)
    lines = ["language variant", f"name {spk.variant}", f"gender {t.gender}", "",
             f"pitch {spk.pitch} {spk.pitch_top}", "flutter 0", "roughness 0"]
    for k, (freq, height, width) in enumerate(t.formants):
        if 1 <= k <= 5:
            freq = int(round(freq * spk.formant))
        lines.append(f"formant {k} {freq} {height} {width}")
    if t.breath:
        lines.append("breath " + " ".join(map(str, t.breath)))
    if t.tone:
        lines.append("tone " + " ".join(map(str, t.tone)))
    if t.echo != (0, 0):
        lines.append(f"echo {t.echo[0]} {t.echo[1]}")
    lines.append(f"consonants {t.consonants}")
    lines.append(f"voicing {t.voicing}")
    return "\n".join(lines) + "\n"


def _overlay_hash(src: Path) -> str:
    h = hashlib.sha256(str(src.resolve()).encode())
    for s in SPEAKERS:
        h.update(s.variant.encode() + b"\0" + variant_text(s).encode())
    return h.hexdigest()[:16]


def ensure_voice_overlay(base_dir: str | os.PathLike | None = None) -> Path:
    """Create (once) and return an ``espeak-ng-data`` dir that contains our voice variants."""
    src = default_data_dir()
    base = Path(base_dir) if base_dir is not None else Path(tempfile.gettempdir()) / f"speechssl-espeak-{os.getuid()}"
    target = base / _overlay_hash(src) / "espeak-ng-data"
    if (target / "voices" / "!v" / ".complete").exists():
        return target
    base.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=base))
    try:
        data = stage / "espeak-ng-data"
        data.mkdir()
        for p in src.iterdir():
            if p.name != "voices":
                os.symlink(p.resolve(), data / p.name)
        (data / "voices").mkdir()
        for p in (src / "voices").iterdir():
            if p.name != "!v":
                os.symlink(p.resolve(), data / "voices" / p.name)
        vdir = data / "voices" / "!v"
        vdir.mkdir()
        for p in (src / "voices" / "!v").iterdir():
            os.symlink(p.resolve(), vdir / p.name)
        for s in SPEAKERS:
            (vdir / s.variant).write_text(variant_text(s))
        (vdir / ".complete").write_text("ok\n")
        try:
            os.rename(stage, target.parent)
        except OSError:
            if not (target / "voices" / "!v" / ".complete").exists():  # lost a race with a broken winner
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target
