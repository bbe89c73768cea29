"""Speech Commands v0.01 (Warden 2018) for KS with the SUPERB 12-class protocol: ten words,
``_unknown_`` (the other twenty words) and ``_silence_`` (1 s cuts of background noise)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from speechssl.data.audio import save_audio
from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_dir,
    read_lines,
    strip_labels,
    utf8_name,
)
from speechssl.errors import AudioError, ConfigError, ManifestError

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
CLASSES = (*WORDS, UNKNOWN, SILENCE)
NOISE_DIR = "_background_noise_"
SAMPLE_RATE = 16000


def label_of(word: str) -> str:
    """Folder name -> one of the 12 SUPERB classes."""
    return word if word in CLASSES else UNKNOWN


def speaker_of(stem: str) -> str:
    """``<speaker hash>_nohash_<n>`` -> the speaker hash."""
    return stem.split("_nohash_")[0]


def clip_item(root: Path, rel: str, where: str | None = None) -> dict:
    """One clip ``<word>/<file>.wav`` (relative to ``root``) as a manifest item."""
    path = root / rel
    if not path.is_file():
        raise ManifestError(f"{where or root}: audio file not found: {path}")
    word = Path(rel).parent.name
    return {"id": f"{word}/{path.stem}", "path": str(path), "label": label_of(word),
            "speaker": speaker_of(path.stem), "_where": where or str(path)}


def read_list(root: Path, name: str) -> list[dict]:
    """The clips named in ``validation_list.txt`` / ``testing_list.txt``."""
    items = []
    for where, _, line in read_lines(root / name, "Speech Commands split list"):
        if line.count("/") != 1 or not line.endswith(".wav"):
            raise ManifestError(f"{where}: expected '<word>/<file>.wav', got {line!r}")
        items.append(clip_item(root, line, where))
    return items


def check_disjoint(root: Path, dev: list[dict], test: list[dict]) -> None:
    """ManifestError naming the clips (the first few, with their lines) that both
    validation_list.txt and testing_list.txt list: a model selected on dev would be
    selected on test clips."""
    test_ids = {it["id"]: it for it in test}
    both = [(it, test_ids[it["id"]]) for it in dev if it["id"] in test_ids]
    if not both:
        return
    shown = ", ".join(f"{d['id']}.wav (lines {_line(d)} and {_line(t)})" for d, t in both[:3])
    more = f" and {len(both) - 3} more" if len(both) > 3 else ""
    raise ManifestError(f"{root / 'validation_list.txt'} and {root / 'testing_list.txt'} both "
                        f"list {len(both)} clip{'s' * (len(both) > 1)}: {shown}{more}; dev and "
                        "test must not overlap: remove each from one of the two lists")


def _line(item: dict) -> str:
    """The line number of a listed clip (its ``_where`` is ``<list file>:<line>``)."""
    return str(item.get("_where", "")).rpartition(":")[2]


def cut_silence(noise: Path, out_dir: Path, dev_every: int) -> tuple[list[dict], list[dict]]:
    """Cut one background-noise wav into non-overlapping 1 s clips under ``out_dir``;
    every ``dev_every``-th clip goes to dev, the rest to train. Returns (train, dev)."""
    try:
        wav, rate = sf.read(str(noise), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{noise}: cannot read audio ({exc})") from exc
    if rate != SAMPLE_RATE:
        raise AudioError(f"{noise}: expected {SAMPLE_RATE} Hz, got {rate} Hz")
    wav = wav.mean(axis=1)
    train, dev = [], []
    for k in range(len(wav) // SAMPLE_RATE):
        clip = np.ascontiguousarray(wav[k * SAMPLE_RATE:(k + 1) * SAMPLE_RATE])
        path = out_dir / f"{noise.stem}-{k:04d}.wav"
        save_audio(path, clip, SAMPLE_RATE)  # on every scan: a replaced noise file is cut anew
        item = {"id": f"{SILENCE}/{noise.stem}-{k:04d}", "path": str(path), "label": SILENCE,
                "speaker": noise.stem}
        (dev if k % dev_every == 0 else train).append(item)
    return train, dev


def read_test_set(test_root: Path) -> list[dict]:
    """speech_commands_test_set_v0.01: one folder per class (incl. _silence_, _unknown_)."""
    check_dir(test_root, "Speech Commands test set (corpus.test_root)")
    clips = sorted(test_root.glob("*/*.wav"))
    for p in clips:
        utf8_name(p.parent)
        utf8_name(p)
    items = [clip_item(test_root, f"{p.parent.name}/{p.name}") for p in clips]
    if not items:
        raise ManifestError(f"{test_root}: no '<class>/<file>.wav' clips in the test set")
    return items


@READERS.register("speech_commands")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifest ``ks`` (train/dev/test) and ``pretrain``.

    train: every word clip not in validation_list.txt / testing_list.txt, plus silence;
    dev: validation_list.txt plus silence; test: ``corpus.test_root`` (the separate
    test set, as SUPERB) when set, else testing_list.txt.
    """
    out = Path(os.path.abspath(out))  # silence clips: absolute paths, whatever the data_dir
    dev = read_list(root, "validation_list.txt")
    listed_test = read_list(root, "testing_list.txt")
    check_disjoint(root, dev, listed_test)
    held_out = {it["id"] for it in dev} | {it["id"] for it in listed_test}
    train = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != NOISE_DIR):
        utf8_name(word_dir)
        for wav in sorted(map(utf8_name, word_dir.glob("*.wav"))):
            it = clip_item(root, f"{word_dir.name}/{wav.name}")
            if it["id"] not in held_out:
                train.append(it)
    noises = sorted(map(utf8_name, check_dir(root / NOISE_DIR, "background noise").glob("*.wav")))
    if not noises:
        raise ManifestError(f"{root / NOISE_DIR}: no background-noise wavs for {SILENCE}")
    fraction = float(cfg.get("silence_dev_fraction", 0.1))
    if not 0 < fraction <= 0.5:
        raise ConfigError(f"corpus.silence_dev_fraction={fraction}: expected 0 < value <= 0.5")
    dev_every = round(1 / fraction)
    for noise in noises:
        s_train, s_dev = cut_silence(noise, out / "wav" / "silence", dev_every)
        train += s_train
        dev += s_dev
    test = read_test_set(Path(str(cfg.test_root)).expanduser()) if cfg.get("test_root") \
        else listed_test
    ks = {"train": add_durations(train), "dev": add_durations(dev), "test": add_durations(test)}
    meta = {"classes": list(CLASSES),
            "test_source": "test_root" if cfg.get("test_root") else "testing_list.txt"}
    return {"ks": ks, "pretrain": {s: strip_labels(ks[s]) for s in ("train", "dev")}}, meta, {}
