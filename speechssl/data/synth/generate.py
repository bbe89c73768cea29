"""Planning, parallel rendering and manifests of the synthetic corpus.

Generation happens in three steps:

1. :func:`plan_corpus` (parent process, pure): every item is fully described by a
   small dict (text, speaker, prosody, augmentation parameters, labels).  Its random
   choices come from ``numpy.random.default_rng([seed, subset_code, split_code, index])``
   so the plan does not depend on iteration order or on the number of workers.
2. :func:`render_item` (worker processes): synthesizes, post-processes and writes one
   wav file, returning the measured fields (duration, phonemes, segments, and the
   phone alignment from eSpeak's phoneme events, retimed through trimming, speed
   perturbation and padding).  Audio
   randomness comes from ``default_rng([seed, subset_code, split_code, index, 1])``.
3. :func:`ensure_corpus`: writes manifests and ``meta.json`` into a staging directory
   which is renamed into place only when complete. A finished corpus is checked against
   its manifests on every call (one stat per WAV); a missing or damaged WAV is rendered
   again from its planned item (same bytes), a missing manifest regenerates the corpus.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from . import augment as A
from . import grammar as G
from . import sessions as S
from .espeak import espeak_version, get_engine, writable_data_dir
from .speakers import SPEAKER_BY_ID, SPEAKER_INDEX, VOICE, inventory, speaker_splits, variant_text
from .text_corpus import ensure_text_corpus

FORMAT_VERSION = 4  # 2: utterances carry a phone "alignment"; 3: drawn speakers, sessions;
# 4: read and acted speech recorded in "studio" sessions (no telephone or muffled band)
SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
SUBSET_CODES = {"asr": 1, "ks": 2, "ic": 3, "sf": 4, "er": 5, "sid": 6, "asv": 7, "sd": 8, "qbe": 9}
SPLIT_CODES = {"train": 0, "dev": 1, "test": 2}
PRETRAIN_SOURCES = ("asr", "ic", "sf", "er")
SUBSETS = tuple(SUBSET_CODES) + ("pretrain",)

# ---------------------------------------------------------------------------
# sizes: per-subset utterance counts per split.  "ks" counts are totals over the 12
# classes (assigned round robin), "qbe_query"/"qbe_doc" split the qbe subset, and
# "asv_trials" is the number of trials (half targets) in manifests/asv/trials.txt.
# ---------------------------------------------------------------------------

# speakers of each size: the first n of the fixed inventory (speakers.py), split 4:1:1
SPEAKER_COUNTS = {"tiny": 24, "default": 300, "large": 1200}

SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {
        "asr": {"train": 48, "dev": 12, "test": 12},
        "ks": {"train": 96, "dev": 24, "test": 24},
        "ic": {"train": 48, "dev": 12, "test": 12},
        "sf": {"train": 48, "dev": 12, "test": 12},
        "er": {"train": 32, "dev": 8, "test": 8},
        "sid": {"train": 48, "dev": 48, "test": 48},
        "asv": {"train": 32, "test": 32},
        "sd": {"train": 16, "dev": 4, "test": 4},
        "qbe_query": {"dev": 4, "test": 4},
        "qbe_doc": {"dev": 12, "test": 12},
        "asv_trials": {"test": 40},
    },
    "default": {
        "asr": {"train": 1500, "dev": 150, "test": 150},
        "ks": {"train": 1800, "dev": 360, "test": 360},
        "ic": {"train": 900, "dev": 200, "test": 200},
        "sf": {"train": 900, "dev": 200, "test": 200},
        "er": {"train": 800, "dev": 200, "test": 200},
        "sid": {"train": 1440, "dev": 480, "test": 480},
        "asv": {"train": 960, "test": 480},
        "sd": {"train": 600, "dev": 120, "test": 120},
        "qbe_query": {"dev": 50, "test": 50},
        "qbe_doc": {"dev": 400, "test": 400},
        "asv_trials": {"test": 4000},
    },
    "large": {
        "asr": {"train": 9000, "dev": 500, "test": 500},
        "ks": {"train": 9600, "dev": 1200, "test": 1200},
        "ic": {"train": 5000, "dev": 600, "test": 600},
        "sf": {"train": 5000, "dev": 600, "test": 600},
        "er": {"train": 4000, "dev": 600, "test": 600},
        "sid": {"train": 7200, "dev": 960, "test": 960},
        "asv": {"train": 6400, "test": 1600},
        "sd": {"train": 3000, "dev": 400, "test": 400},
        "qbe_query": {"dev": 100, "test": 100},
        "qbe_doc": {"dev": 1500, "test": 1500},
        "asv_trials": {"test": 20000},
    },
}

# Per-utterance events on top of the recording session (sessions.py: microphone, band, room,
# noise floor, level): an interfering noise or babble at an SNR, a speed change, padding,
# and a small jitter of the session's level and noise-floor SNR.
_AUG_BASE = dict(p_noise=0.5, snr=(5.0, 30.0), p_babble=0.25, p_speed=0.3, speed=(0.9, 1.1),
                 pad=(0.05, 0.35), level_jitter_db=1.5, snr_jitter_db=2.0)
AUG: dict[str, dict] = {
    "asr": dict(_AUG_BASE),
    "ic": dict(_AUG_BASE),
    "sf": dict(_AUG_BASE),
    "er": dict(_AUG_BASE, p_speed=0.0),  # speed changes pitch and rate, i.e. the emotion cues
    "sid": dict(_AUG_BASE, p_speed=0.15, speed=(0.97, 1.03)),
    "asv": dict(_AUG_BASE, p_speed=0.15, speed=(0.97, 1.03)),
    "ks": dict(_AUG_BASE, p_noise=0.85, snr=(0.0, 25.0), p_babble=0.15),
    "sd": dict(_AUG_BASE, p_noise=0.6, snr=(10.0, 30.0), p_speed=0.2, speed=(0.95, 1.05)),
    "qbe": dict(_AUG_BASE, p_noise=0.4, snr=(10.0, 30.0), p_speed=0.2, speed=(0.95, 1.05)),
}
# sessions of the SID speakers in each split: dev and test are sessions never trained on,
# as VoxCeleb1's identification split holds out whole videos
SID_SESSIONS = {"train": (0, 1, 2, 3), "dev": (4,), "test": (5,)}
NOISE_KIND_WEIGHTS = {"white": 0.25, "pink": 0.35, "brown": 0.3, "blue": 0.1}

# emotion prosody relative to the speaker's own settings
EMOTION_STYLE = {
    "neutral": dict(pitch=0, range=0, rate=1.0, volume=100, wordgap=0, emphasis=0, drive=0.0, tilt=0.0),
    "happy": dict(pitch=12, range=28, rate=1.10, volume=110, wordgap=0, emphasis=1, drive=0.0, tilt=0.25),
    "sad": dict(pitch=-12, range=-28, rate=0.80, volume=70, wordgap=3, emphasis=0, drive=0.0, tilt=-0.5),
    "angry": dict(pitch=4, range=16, rate=1.06, volume=150, wordgap=0, emphasis=2, drive=2.5, tilt=0.4),
}


def corpus_dir_name(size: str, seed: int) -> str:
    return f"synth-{size}-seed{seed}"


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; valid sizes: {', '.join(sorted(SIZES))}")


# ---------------------------------------------------------------------------
# planning (parent)
# ---------------------------------------------------------------------------

def _rng(seed: int, subset: str, split: str, index: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, SUBSET_CODES[subset], SPLIT_CODES[split], index, *extra])


def _choice(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _style(rng, spk_id: str, emotion: str = "neutral") -> dict:
    spk = SPEAKER_BY_ID[spk_id]
    e = EMOTION_STYLE[emotion]
    return {
        "pitch": int(np.clip(round(50 + e["pitch"] + rng.normal(0, 3)), 0, 100)),
        "range": int(np.clip(round(spk.intonation + e["range"] + rng.normal(0, 6)), 0, 100)),
        "rate": int(round(spk.rate * e["rate"] * math.exp(rng.normal(0, 0.04)))),
        "volume": int(e["volume"]),
        "wordgap": int(e["wordgap"]),
        "emphasis": int(e["emphasis"]),
        "drive": float(e["drive"]),
        "tilt": float(e["tilt"]),
    }


def _aug(rng, subset: str, split: str, babble_pool: list[str], speed: bool = True) -> dict:
    cfg = AUG[subset]
    out: dict = {"level_jitter_db": round(float(rng.normal(0.0, cfg["level_jitter_db"])), 3),
                 "snr_jitter_db": round(float(rng.normal(0.0, cfg["snr_jitter_db"])), 3),
                 "pad": [round(float(rng.uniform(*cfg["pad"])), 4), round(float(rng.uniform(*cfg["pad"])), 4)]}
    # draw every variable unconditionally so that the plan stays aligned across configs
    u_speed, f_speed = rng.random(), float(rng.uniform(*cfg["speed"]))
    u_noise, snr = rng.random(), float(rng.uniform(*cfg["snr"]))
    u_babble = rng.random()
    kinds = list(NOISE_KIND_WEIGHTS)
    kind = kinds[int(rng.choice(len(kinds), p=list(NOISE_KIND_WEIGHTS.values())))]
    out["speed"] = round(f_speed, 2) if (speed and u_speed < cfg["p_speed"]) else 1.0
    if u_noise < cfg["p_noise"]:
        out["snr_db"] = round(snr, 2)
        if u_babble < cfg["p_babble"] and babble_pool:
            n = int(rng.integers(3, 6))
            out["babble"] = [[_choice(rng, babble_pool), G.sentence(rng)] for _ in range(n)]
        else:
            out["noise"] = kind
    return out


# the recording conditions of each subset's sessions (sessions.CONDITIONS)
SUBSET_CONDITIONS = {"asr": "studio", "ic": "studio", "sf": "studio", "er": "studio",
                     "qbe": "studio", "ks": "wild", "sid": "wild", "asv": "wild", "sd": "wild"}


def _session(seed: int, speaker: str, subset: str, rng, choices=None) -> dict:
    """One of the speaker's recording sessions under the subset's conditions: drawn from
    ``choices`` (session indices; default all of them)."""
    choices = tuple(range(S.SESSIONS_PER_SPEAKER)) if choices is None else tuple(choices)
    index = choices[int(rng.integers(len(choices)))]
    return S.plan_session(seed, speaker, SPEAKER_INDEX[speaker], index,
                          SUBSET_CONDITIONS[subset])


def _utt(seed, subset, split, index, spk, text, rng, *, emotion="neutral", babble_pool=(), labels=None,
         phonemes=False, speed=True, kind="utt", sessions=None) -> dict:
    item_id = f"{subset}-{split}-{index:06d}"
    session = _session(seed, spk.split("+")[0], subset, rng, sessions)
    return {
        "id": item_id,
        "subset": subset,
        "split": split,
        "key": [seed, SUBSET_CODES[subset], SPLIT_CODES[split], index],
        "path": f"wav/{subset}/{split}/{item_id}.wav",
        "speaker": spk,
        "kind": kind,
        "text": text,
        "style": _style(rng, spk, emotion) if spk in SPEAKER_BY_ID else None,
        "aug": _aug(rng, subset, split, list(babble_pool), speed=speed),
        "session": session,
        "labels": dict(labels or {}),
        "want_phonemes": phonemes,
    }


def plan_corpus(size: str, seed: int) -> tuple[list[dict], dict]:
    """Plan every item of the corpus.  Returns (items, extra) where ``extra`` holds
    split-level plans (qbe terms)."""
    _check_size(size)
    sizes = SIZES[size]
    spl = speaker_splits(SPEAKER_COUNTS[size])
    all_spk = [s.id for s in inventory(SPEAKER_COUNTS[size])]
    items: list[dict] = []

    def counts(subset):
        return sizes[subset].items()

    # --- asr
    for split, n in counts("asr"):
        spks = spl[split]
        for i in range(n):
            rng = _rng(seed, "asr", split, i)
            text = G.sentence(rng)
            items.append(_utt(seed, "asr", split, i, spks[i % len(spks)], text, rng, babble_pool=spks,
                              labels={"text": text}, phonemes=True))
    # --- ks
    for split, n in counts("ks"):
        spks = spl[split]
        for i in range(n):
            rng = _rng(seed, "ks", split, i)
            label = G.KS_LABELS[i % len(G.KS_LABELS)]
            spk = _choice(rng, spks)
            if label == G.SILENCE_LABEL:
                word = ""
            elif label == G.UNKNOWN_LABEL:
                word = _choice(rng, G.UNKNOWN_WORDS)
            else:
                word = label
            it = _utt(seed, "ks", split, i, spk, word, rng, babble_pool=spks,
                      labels={"label": label, "text": word}, kind="silence" if not word else "ks")
            it["offset_u"] = float(rng.random())
            if not word:
                it["noise_level_db"] = round(float(rng.uniform(-50.0, -25.0)), 3)
                it["noise_mix"] = [float(w) for w in rng.dirichlet(np.ones(4))]
                it["hum"] = float(rng.random())
            items.append(it)
    # --- ic
    for split, n in counts("ic"):
        spks = spl[split]
        order = np.random.default_rng([seed, SUBSET_CODES["ic"], SPLIT_CODES[split], 10**9]).permutation(
            len(G.INTENTS))
        for i in range(n):
            rng = _rng(seed, "ic", split, i)
            intent = G.INTENTS[int(order[i % len(order)])]
            text = G.intent_utterance(rng, intent)
            items.append(_utt(seed, "ic", split, i, _choice(rng, spks), text, rng, babble_pool=spks,
                              labels={"action": intent[0], "object": intent[1], "location": intent[2],
                                      "text": text}, phonemes=True))
    # --- sf
    for split, n in counts("sf"):
        spks = spl[split]
        for i in range(n):
            rng = _rng(seed, "sf", split, i)
            intent, text, slots = G.slot_utterance(rng, G.SF_INTENTS[i % len(G.SF_INTENTS)])
            items.append(_utt(seed, "sf", split, i, _choice(rng, spks), text, rng, babble_pool=spks,
                              labels={"text": text, "slots": slots, "intent": intent}))
    # --- er
    for split, n in counts("er"):
        spks = spl[split]
        for i in range(n):
            rng = _rng(seed, "er", split, i)
            emotion = G.EMOTIONS[i % len(G.EMOTIONS)]
            text = G.sentence(rng)
            items.append(_utt(seed, "er", split, i, _choice(rng, spks), text, rng, emotion=emotion,
                              babble_pool=spks, labels={"emotion": emotion, "text": text}))
    # --- sid (all speakers in every split)
    for split, n in counts("sid"):
        for i in range(n):
            rng = _rng(seed, "sid", split, i)
            text = G.sentence(rng)
            items.append(_utt(seed, "sid", split, i, all_spk[i % len(all_spk)], text, rng,
                              babble_pool=all_spk, labels={"text": text},
                              sessions=SID_SESSIONS[split]))
    # --- asv (train: train speakers; test: dev + test speakers)
    for split, n in counts("asv"):
        spks = spl["train"] if split == "train" else spl["dev"] + spl["test"]
        for i in range(n):
            rng = _rng(seed, "asv", split, i)
            text = G.sentence(rng)
            items.append(_utt(seed, "asv", split, i, spks[i % len(spks)], text, rng, babble_pool=spks,
                              labels={"text": text}))
    # --- sd (two-speaker mixtures)
    for split, n in counts("sd"):
        spks = spl[split]
        for i in range(n):
            rng = _rng(seed, "sd", split, i)
            a, b = (spks[int(k)] for k in rng.choice(len(spks), size=2, replace=False))
            texts = [G.sentence(rng), G.sentence(rng)]
            it = _utt(seed, "sd", split, i, f"{a}+{b}", "", rng, babble_pool=spks, kind="sd",
                      speed=False, labels={"speakers": [a, b]})
            it["sources"] = [
                {"speaker": a, "text": texts[0], "style": _style(rng, a),
                 "speed": round(float(rng.uniform(*AUG["sd"]["speed"])), 2)
                 if rng.random() < AUG["sd"]["p_speed"] else 1.0},
                {"speaker": b, "text": texts[1], "style": _style(rng, b),
                 "speed": round(float(rng.uniform(*AUG["sd"]["speed"])), 2)
                 if rng.random() < AUG["sd"]["p_speed"] else 1.0},
            ]
            it["overlap"] = round(float(rng.uniform(0.2, 0.6)), 4)
            it["gain_db"] = round(float(rng.uniform(-3.0, 3.0)), 3)
            items.append(it)
    # --- qbe
    extra: dict = {"qbe_terms": {}}
    vocab_terms = G.content_words()
    for split in sizes["qbe_query"]:
        nq, nd = sizes["qbe_query"][split], sizes["qbe_doc"][split]
        srng = np.random.default_rng([seed, SUBSET_CODES["qbe"], SPLIT_CODES[split], 10**9])
        n_terms = nq if nq < 8 else max(1, nq // 2)
        terms = [vocab_terms[int(k)] for k in srng.choice(len(vocab_terms), size=n_terms, replace=False)]
        extra["qbe_terms"][split] = terms
        spks = sorted(spl[split])
        q_spk, d_spk = spks[: len(spks) // 2], spks[len(spks) // 2:]
        for i in range(nq):
            rng = _rng(seed, "qbe", split, i)
            term = terms[i % n_terms]
            spk = q_spk[(i // n_terms + i) % len(q_spk)]
            it = _utt(seed, "qbe", split, i, spk, term, rng, babble_pool=spks, kind="query",
                      labels={"kind": "query", "term": term})
            items.append(it)
        for j in range(nd):
            i = nq + j
            rng = _rng(seed, "qbe", split, i)
            force = terms[j % n_terms] if rng.random() < 0.5 else None
            text = G.sentence(rng, force_word=force)
            items.append(_utt(seed, "qbe", split, i, d_spk[j % len(d_spk)], text, rng, babble_pool=spks,
                              labels={"kind": "doc", "text": text}))
    return items, extra


# ---------------------------------------------------------------------------
# rendering (workers)
# ---------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(voice_dir: str, out_dir: str) -> None:
    _WORKER["voice_dir"] = voice_dir
    _WORKER["out_dir"] = out_dir
    _WORKER["phon_cache"] = {}
    get_engine(voice_dir)


def _ssml(text: str, n_emph: int, rng: np.random.Generator) -> str | None:
    if n_emph <= 0:
        return None
    words = text.split()
    cand = [k for k, w in enumerate(words) if len(w) > 3]
    if not cand:
        return None
    pick = set(int(k) for k in rng.choice(cand, size=min(n_emph, len(cand)), replace=False))
    out = [f"<emphasis level=\"strong\">{w}</emphasis>" if k in pick else w for k, w in enumerate(words)]
    return "<speak>" + " ".join(out) + "</speak>"


def _speak(text: str, spk_id: str, style: dict, rng: np.random.Generator,
           item_id: str) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Synthesize, resample to 16 kHz and apply the emotion post-processing; returns the
    audio and its phone segments (seconds from the start of the returned audio)."""
    eng = get_engine(_WORKER.get("voice_dir"))
    spk = SPEAKER_BY_ID[spk_id]
    ssml = _ssml(text, style.get("emphasis", 0), rng)
    try:
        raw, phones = eng.synth_aligned(
            ssml or text, VOICE, variant_text(spk), rate=style["rate"], pitch=style["pitch"],
            pitch_range=style["range"], volume=style["volume"], wordgap=style["wordgap"],
            rand_seed=int(rng.integers(2**31 - 1)), ssml=ssml is not None)
    except RuntimeError as e:
        raise RuntimeError(f"synthesis failed for item {item_id} (text {text!r}): {e}") from e
    if eng.sample_rate != 22050:
        g = math.gcd(SAMPLE_RATE, eng.sample_rate)
        x = A.resample(raw.astype(np.float64), SAMPLE_RATE // g, eng.sample_rate // g)
    else:
        x = A.resample(raw.astype(np.float64), 320, 441)
    x, start = _trim(x)
    phones = _retime(phones, duration=len(x) / SAMPLE_RATE, shift=-start / SAMPLE_RATE)
    if len(x) == 0:
        raise RuntimeError(f"synthesis produced silence for item {item_id} (text {text!r})")
    drive = style.get("drive", 0.0)
    if drive > 0:
        peak = np.max(np.abs(x))
        x = np.tanh(drive * x / peak) / np.tanh(drive) * peak
    tilt = style.get("tilt", 0.0)
    if tilt > 0:  # brighten: add a scaled first difference
        x = x + tilt * np.concatenate([[0.0], np.diff(x)]) * 2.0
    elif tilt < 0:  # darken: one-pole low-pass
        a = -tilt
        x = lfilter([1.0 - a], [1.0, -a], x)
    return x, phones


def _retime(phones: list[tuple[str, float, float]], duration: float, scale: float = 1.0,
            shift: float = 0.0) -> list[tuple[str, float, float]]:
    """Phone segments mapped by ``t -> t * scale + shift`` and clipped to ``[0, duration]``;
    segments clipped away are dropped, zero-length ones inside are kept."""
    out = []
    for p, s, e in phones:
        s, e = s * scale + shift, e * scale + shift
        cs, ce = max(0.0, s), min(duration, e)
        if ce > cs or (e == s and 0.0 <= s <= duration):
            out.append((p, cs, ce))
    return out


def _speed_time_scale(speed: float) -> float:
    """How :func:`augment.speed_perturb` stretches time (1 / the factor it really uses)."""
    fr = A.speed_factor_fraction(speed)
    return fr.denominator / fr.numerator


def _trim(x: np.ndarray, frame: int = 160, rel_db: float = -45.0) -> tuple[np.ndarray, int]:
    """Cut leading / trailing silence (frame RMS below ``rel_db`` of the loudest frame);
    returns the kept audio and the index of its first sample in ``x``."""
    n = len(x) // frame
    if n == 0:
        return x, 0
    e = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    thr = e.max() * 10 ** (rel_db / 20)
    act = np.nonzero(e > thr)[0]
    if len(act) == 0:
        return x[:0], 0
    s = max(0, (act[0] - 1) * frame)
    t = min(len(x), (act[-1] + 2) * frame)
    return x[s:t], s


def _set_level(x: np.ndarray, level_db: float) -> np.ndarray:
    p = A.power(x)
    if p <= 0:
        return x
    return x * (10 ** (level_db / 20) / math.sqrt(p))


def _noise_for(aug: dict, n: int, rng: np.random.Generator, item_id: str) -> np.ndarray | None:
    if "snr_db" not in aug:
        return None
    if "babble" in aug:
        srcs = []
        for spk, text in aug["babble"]:
            style = _style(rng, spk)
            srcs.append(_speak(text, spk, style, rng, item_id + "/babble")[0])
        return A.babble(srcs, n, rng)
    return A.colored_noise(n, rng, aug.get("noise", "white"))


def _in_room(x: np.ndarray, speed: float, session: dict) -> np.ndarray:
    """A voice, sped up or down, in the session's room."""
    if speed != 1.0:
        x = A.speed_perturb(x, speed)
    return S.room(x, session, SAMPLE_RATE)


def _finish(x: np.ndarray, item: dict, rng: np.random.Generator) -> np.ndarray:
    """The utterance's noise event (if any) at its SNR, the session's noise floor,
    microphone and band, then the session's recording level (with the utterance's jitter)."""
    aug, session = item["aug"], item["session"]
    noise = _noise_for(aug, len(x), rng, item["id"])
    if noise is not None:
        x = x + A.scale_to_snr(x, noise, aug["snr_db"])
    x = S.record(x, session, rng, SAMPLE_RATE, snr_jitter_db=aug["snr_jitter_db"])
    return _set_level(x, session["level_db"] + aug["level_jitter_db"])


def _pad(x: np.ndarray, pad: list[float]) -> np.ndarray:
    a, b = (int(round(p * SAMPLE_RATE)) for p in pad)
    return np.concatenate([np.zeros(a), x, np.zeros(b)])


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.98:
        x = x * (0.98 / peak)
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def render_item(item: dict) -> dict:
    """Render one planned item into ``<out_dir>/<item['path']>``; returns measured fields."""
    rng = np.random.default_rng(item["key"] + [1])
    aug = item["aug"]
    kind = item["kind"]
    out: dict = {"id": item["id"]}
    if kind == "silence":
        n = SAMPLE_RATE
        mix = np.zeros(n)
        for w, k in zip(item["noise_mix"], A.NOISE_KINDS, strict=True):
            mix += w * A.colored_noise(n, rng, k)
        if item["hum"] < 0.3:
            t = np.arange(n) / SAMPLE_RATE
            f0 = 50.0 if item["hum"] < 0.15 else 60.0
            mix += sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.28)) / h for h in (1, 2, 3)) * 0.5
        x = S.record(mix, item["session"], rng, SAMPLE_RATE, floor=False)  # the line's colour
        x = _set_level(x, item["noise_level_db"])
    elif kind == "ks":
        x = _speak(item["text"], item["speaker"], item["style"], rng, item["id"])[0]
        x = _in_room(x, aug["speed"], item["session"])
        max_len = int(0.95 * SAMPLE_RATE)
        if len(x) > max_len:
            x = A.speed_perturb(x, len(x) / max_len)[:max_len]
        off = int(item["offset_u"] * (SAMPLE_RATE - len(x)))
        y = np.zeros(SAMPLE_RATE)
        y[off:off + len(x)] = x
        x = _finish(y, item, rng)
    elif kind == "sd":
        srcs = []
        for src in item["sources"]:
            s = _speak(src["text"], src["speaker"], src["style"], rng, item["id"])[0]
            s = _in_room(s, src["speed"], item["session"])  # one room: the first speaker's session
            srcs.append(s / math.sqrt(A.power(s)))
        la, lb = len(srcs[0]), len(srcs[1])
        overlap = int(round(item["overlap"] * min(la, lb)))
        lead, tail = (int(round(p * SAMPLE_RATE)) for p in aug["pad"])
        start_a, start_b = lead, lead + la - overlap
        total = max(start_a + la, start_b + lb) + tail
        x = np.zeros(total)
        x[start_a:start_a + la] += srcs[0]
        x[start_b:start_b + lb] += srcs[1] * 10 ** (item["gain_db"] / 20)
        x = _finish(x, item, rng)
        spk_a, spk_b = item["labels"]["speakers"]
        out["segments"] = [
            {"speaker": spk_a, "start": round(start_a / SAMPLE_RATE, 4), "end": round((start_a + la) / SAMPLE_RATE, 4)},
            {"speaker": spk_b, "start": round(start_b / SAMPLE_RATE, 4), "end": round((start_b + lb) / SAMPLE_RATE, 4)},
        ]
    else:  # "utt" and "query"
        x, phones = _speak(item["text"], item["speaker"], item["style"], rng, item["id"])
        x = _in_room(x, aug["speed"], item["session"])
        x = _pad(x, aug["pad"])
        x = _finish(x, item, rng)
        # reverberation keeps the direct path at lag 0, so only speed and padding move phones
        phones = _retime(phones, duration=len(x) / SAMPLE_RATE, scale=_speed_time_scale(aug["speed"]),
                         shift=round(aug["pad"][0] * SAMPLE_RATE) / SAMPLE_RATE)
        out["alignment"] = [[p, round(s, 4), round(e, 4)] for p, s, e in phones]
    pcm = _to_pcm16(x)
    _write_wav(Path(_WORKER["out_dir"]) / item["path"], pcm)
    out["frames"] = int(len(pcm))
    if item.get("want_phonemes"):
        cache = _WORKER.setdefault("phon_cache", {})
        text = item["text"]
        if text not in cache:
            try:
                cache[text] = get_engine(_WORKER.get("voice_dir")).phonemes(text)
            except RuntimeError as e:
                raise RuntimeError(f"phonemisation failed for item {item['id']} (text {text!r}): {e}") from e
        out["phonemes"] = " ".join(cache[text])
    return out


def _worker_render(item: dict) -> dict:
    return render_item(item)


# ---------------------------------------------------------------------------
# manifests and the corpus directory
# ---------------------------------------------------------------------------

_MANIFEST_FIELDS = {
    "asr": ("text",),
    "ks": ("label", "text"),
    "ic": ("action", "object", "location", "text"),
    "sf": ("text", "slots", "intent"),
    "er": ("emotion", "text"),
    "sid": ("text",),
    "asv": ("text",),
    "sd": ("speakers",),
    "qbe": ("kind", "term", "text"),
}


def _manifest_entry(item: dict, res: dict) -> dict:
    e = {"id": item["id"], "path": item["path"], "duration": round(res["frames"] / SAMPLE_RATE, 4),
         "speaker": item["speaker"], "session": item["session"]["id"]}
    for k in _MANIFEST_FIELDS[item["subset"]]:
        if k in item["labels"]:
            e[k] = item["labels"][k]
    if "phonemes" in res:
        e["phonemes"] = res["phonemes"]
    if "segments" in res:
        e["segments"] = res["segments"]
    if "alignment" in res:
        e["alignment"] = res["alignment"]
    return e


def _fsync_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_jsonl(path: Path, entries: list[dict]) -> None:
    entries = sorted(entries, key=lambda e: e["id"])
    _fsync_write(path, "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries))


def _asv_trials(entries: list[dict], n_trials: int, seed: int) -> list[str]:
    """Half target, half non-target trials; a target pair comes from two sessions of its
    speaker wherever the speaker has more than one (VoxCeleb1's trials pair different
    videos)."""
    rng = np.random.default_rng([seed, SUBSET_CODES["asv"], 99])
    entries = sorted(entries, key=lambda e: e["id"])
    by_spk: dict[str, list[str]] = {}
    for e in entries:
        by_spk.setdefault(e["speaker"], []).append(e["id"])
    spks = sorted(by_spk)
    ids = [e["id"] for e in entries]
    spk_of = {e["id"]: e["speaker"] for e in entries}
    session_of = {e["id"]: e.get("session") for e in entries}
    many = {spk for spk, ids_ in by_spk.items() if len({session_of[i] for i in ids_}) > 1}
    n_target_pairs = 0
    for spk, ids_ in by_spk.items():
        n_target_pairs += len(ids_) * (len(ids_) - 1) // 2
        if spk in many:  # less the same-session pairs
            per = Counter(session_of[i] for i in ids_)
            n_target_pairs -= sum(k * (k - 1) // 2 for k in per.values())
    n_half = min(n_trials // 2, n_target_pairs)
    lines, seen = [], set()
    tries = 0
    while len(lines) < n_half and tries < 100 * n_trials:
        tries += 1
        spk = spks[int(rng.integers(len(spks)))]
        if len(by_spk[spk]) < 2:
            continue
        a, b = (by_spk[spk][int(k)] for k in rng.choice(len(by_spk[spk]), size=2, replace=False))
        if spk in many and session_of[a] == session_of[b]:
            continue
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            lines.append(f"1 {a} {b}")
    n_t = len(lines)
    tries = 0
    while len(lines) < 2 * n_t and tries < 100 * n_trials:
        tries += 1
        a, b = ids[int(rng.integers(len(ids)))], ids[int(rng.integers(len(ids)))]
        if spk_of[a] != spk_of[b] and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            lines.append(f"0 {a} {b}")
    return [lines[int(k)] for k in rng.permutation(len(lines))]


def _run_items(items: list[dict], out_dir: Path, voice_dir: Path, num_workers: int, progress: bool) -> dict:
    from tqdm import tqdm

    results: dict[str, dict] = {}
    bar = tqdm(total=len(items), desc="synthesizing corpus", unit="utt", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        if num_workers <= 1:
            _init_worker(str(voice_dir), str(out_dir))
            for it in items:
                results[it["id"]] = _worker_render(it)
                bar.update(1)
        else:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            ctx = mp.get_context(method)
            chunk = max(1, min(32, len(items) // (num_workers * 8) or 1))
            with ctx.Pool(num_workers, initializer=_init_worker, initargs=(str(voice_dir), str(out_dir))) as pool:
                for res in pool.imap_unordered(_worker_render, items, chunksize=chunk):
                    results[res["id"]] = res
                    bar.update(1)
    finally:
        bar.close()
    return results


def generate_corpus(out_dir: Path, size: str, seed: int, num_workers: int, progress: bool) -> None:
    """Generate the whole corpus into ``out_dir`` (which must not exist yet)."""
    t0 = time.time()
    items, extra = plan_corpus(size, seed)
    voice_dir = writable_data_dir()
    out_dir.mkdir(parents=True)
    results = _run_items(items, out_dir, voice_dir, num_workers, progress)

    manifests: dict[str, dict[str, list[dict]]] = {}
    for it in items:
        manifests.setdefault(it["subset"], {}).setdefault(it["split"], []).append(
            _manifest_entry(it, results[it["id"]]))
    manifests["pretrain"] = {}
    for split in ("train", "dev"):
        manifests["pretrain"][split] = [
            {k: e[k] for k in ("id", "path", "duration", "speaker", "alignment") if k in e}
            for sub in PRETRAIN_SOURCES for e in manifests[sub][split]]

    phone_set = sorted({p for sub in ("asr", "ic") for entries in manifests[sub].values()
                        for e in entries for p in e["phonemes"].split()})
    counts, hours = {}, {}
    for sub, splits in manifests.items():
        counts[sub] = {sp: len(v) for sp, v in splits.items()}
        hours[sub] = round(sum(e["duration"] for v in splits.values() for e in v) / 3600.0, 4)
        for sp, entries in splits.items():
            _write_jsonl(out_dir / "manifests" / sub / f"{sp}.jsonl", entries)
    trials = _asv_trials(manifests["asv"]["test"], SIZES[size]["asv_trials"]["test"], seed)
    _fsync_write(out_dir / "manifests" / "asv" / "trials.txt", "".join(t + "\n" for t in trials))

    n_speakers = SPEAKER_COUNTS[size]
    spl = speaker_splits(n_speakers)
    sessions = {it["session"]["id"]: S.describe(it["session"]) for it in items}
    meta = {
        "format_version": FORMAT_VERSION,
        "size": size,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "speakers": {s.id: s.meta() for s in inventory(n_speakers)},
        "sessions": dict(sorted(sessions.items())),
        "speaker_splits": spl,
        "phone_set": phone_set,
        "keywords": list(G.KS_LABELS),
        "emotions": list(G.EMOTIONS),
        "intents": {"action": list(G.IC_ACTIONS), "object": list(G.IC_OBJECTS),
                    "location": list(G.IC_LOCATIONS)},
        "intent_combinations": [list(t) for t in G.INTENTS],
        "slot_types": list(G.SLOT_TYPES),
        "sf_intents": list(G.SF_INTENTS),
        "qbe_terms": extra["qbe_terms"],
        "counts": counts,
        "hours": hours,
        "generator": f"espeak-ng {espeak_version()}",
    }
    for d in sorted({p.parent for p in out_dir.rglob("*")} | {out_dir}, key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    _fsync_write(out_dir / "meta.json", json.dumps(meta, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
    _fsync_dir(out_dir)
    if progress:
        tot_h = sum(v for k, v in hours.items() if k != "pretrain")
        print(f"synthesized {len(items)} utterances ({tot_h:.2f} h) in {time.time() - t0:.1f} s",
              file=sys.stderr)


WAV_HEADER_BYTES = 44  # soundfile's PCM_16 WAV header (_write_wav): size = 44 + 2 x frames


def _manifest_names(size: str) -> list[str]:
    """``<subset>/<split>.jsonl`` of every manifest generate_corpus writes."""
    names = [f"{sub}/{split}.jsonl" for sub in SUBSET_CODES if sub != "qbe"
             for split in SIZES[size][sub]]
    names += [f"qbe/{split}.jsonl" for split in SIZES[size]["qbe_query"]]
    return names + [f"pretrain/{split}.jsonl" for split in ("train", "dev")]


def damaged_files(final: Path, size: str) -> tuple[list[str], dict[str, dict]] | None:
    """Check a finished corpus against its manifests: one stat per audio file, no decoding.
    Returns (relative paths of WAVs missing or of another size than their manifest duration
    says, manifest entry per path), or None when a manifest itself is missing or unreadable
    (only a new generation repairs that)."""
    bad, entries = [], {}
    if not (final / "manifests" / "asv" / "trials.txt").is_file():
        return None
    for name in _manifest_names(size):
        if name.startswith("pretrain/"):  # lists items of PRETRAIN_SOURCES again: checked there
            if not (final / "manifests" / name).is_file():
                return None
            continue
        try:
            with open(final / "manifests" / name, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f]
            for e in lines:
                entries[e["path"]] = e
                try:
                    got = os.stat(final / e["path"]).st_size
                except OSError:
                    bad.append(e["path"])
                    continue
                if abs((got - WAV_HEADER_BYTES) / 2 - e["duration"] * SAMPLE_RATE) > 1:
                    bad.append(e["path"])  # truncated or replaced
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            return None
    return bad, entries


def format_version(final: Path) -> int | None:
    """The ``format_version`` in a corpus's meta.json (None when unreadable: a damaged
    meta.json is named by the reader, speechssl.data.corpus.read_meta)."""
    try:
        return int(json.loads((final / "meta.json").read_text(encoding="utf-8"))["format_version"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _say(text: str) -> None:
    print(f"[synth] {text}", file=sys.stderr, flush=True)


def _repair_items(final: Path, size: str, seed: int, bad: list[str], entries: dict[str, dict],
                  num_workers: int) -> bool:
    """Render the items of ``bad`` again into a staging directory, check each against its
    manifest entry (duration, phonemes, alignment: the same synthesis), then move them into
    place one rename each. False (nothing moved) when any differs, e.g. another eSpeak NG."""
    todo = [it for it in plan_corpus(size, seed)[0] if it["path"] in set(bad)]
    if len(todo) != len(bad):
        return False
    staging = final.parent / f"{final.name}.repair-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        results = _run_items(todo, staging, writable_data_dir(),
                             max(1, min(num_workers, len(todo))), progress=False)
        if any(json.loads(json.dumps(_manifest_entry(it, results[it["id"]]))) != entries[it["path"]]
               for it in todo):
            return False
        for it in todo:
            os.replace(staging / it["path"], final / it["path"])
        for d in {(final / it["path"]).parent for it in todo}:
            _fsync_dir(d)
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _generate_into(root: Path, name: str, size: str, seed: int, num_workers: int,
                   progress: bool) -> None:
    """Generate the corpus into a staging directory and swap it in for ``root / name``."""
    final = root / name
    for stale in [*root.glob(f"{name}.partial-*"), *root.glob(f"{name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    staging = root / f"{name}.partial-{os.getpid()}"
    try:
        generate_corpus(staging, size, seed, num_workers, progress)
        if final.exists():
            old = root / f"{name}.old-{os.getpid()}"
            os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def ensure_corpus(root: str | os.PathLike, size: str = "default", seed: int = 0,
                  num_workers: int | None = None, progress: bool = True) -> Path:
    """Return ``Path(root) / corpus_dir_name(size, seed)``, generating it first if needed.

    Generation goes to ``<name>.partial-<pid>`` and is renamed into place only when
    complete; concurrent callers serialise on ``<root>/<name>.lock``. A finished corpus is
    checked on every call (:func:`damaged_files`: one stat per WAV; a corpus of another
    :data:`FORMAT_VERSION` is generated again); missing or damaged WAVs
    are rendered again, the same bytes, since synthesis is deterministic per item; a missing
    manifest, or an item that does not come out the same, regenerates the whole corpus.
    Either is said in one line.
    """
    _check_size(size)
    seed = int(seed)
    root = Path(root)
    name = corpus_dir_name(size, seed)
    final = root / name
    if (final / "meta.json").is_file() and format_version(final) in (FORMAT_VERSION, None):
        found = damaged_files(final, size)
        if found is not None and not found[0]:
            return final
    workers = max(1, int(num_workers if num_workers is not None else os.cpu_count() or 1))
    from speechssl.lock import locked

    with locked(final):  # concurrent callers: one generates or repairs, the others wait
        if not (final / "meta.json").is_file():  # new, or incomplete: not ours to trust
            _generate_into(root, name, size, seed, workers, progress)
        elif (old := format_version(final)) not in (FORMAT_VERSION, None):
            _say(f"{final}: written in corpus format {old}, this version writes format "
                 f"{FORMAT_VERSION} (docs/corpora.md): generating the corpus again")
            _generate_into(root, name, size, seed, workers, progress)
        else:
            found = damaged_files(final, size)
            if found is None:
                _say(f"{final}: a manifest is missing or damaged: generating the corpus "
                     "again (deterministic from the seed)")
                _generate_into(root, name, size, seed, workers, progress)
            elif found[0]:
                bad, entries = found
                what = f"{len(bad)} audio file{'s' * (len(bad) > 1)} missing or damaged " \
                       f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
                if _repair_items(final, size, seed, bad, entries, workers):
                    _say(f"{final}: {what}: rendered again, the same bytes")
                else:
                    _say(f"{final}: {what}, and they do not render the same (another "
                         "eSpeak NG?): generating the corpus again")
                    _generate_into(root, name, size, seed, workers, progress)
    ensure_text_corpus(root, size, seed)  # its text twin, beside it (speechssl.data.synth.text_corpus)
    return final
