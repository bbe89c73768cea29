"""IEMOCAP (Busso et al. 2008) for ER with the SUPERB protocol: four classes (excited
merged into happy), leave-one-session-out over five folds."""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_dir,
    read_lines,
    stable_fraction,
    strip_labels,
)
from speechssl.errors import ConfigError, ManifestError

EMOTIONS = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
SESSIONS = (1, 2, 3, 4, 5)
_TURN = re.compile(r"^\[(\d+(?:\.\d+)?) - (\d+(?:\.\d+)?)\]\t(\S+)\t(\S+)\t\[")


def speaker_of(utt: str) -> str:
    """``Ses01F_impro01_M000`` -> ``Ses01M`` (the session and the speaking actor)."""
    return utt[:5] + utt.rsplit("_", 1)[-1][0]


def read_session(root: Path, session: int) -> list[dict]:
    """The kept turns of one session: id, path, emotion (4 classes), speaker, session."""
    base = check_dir(root / f"Session{session}", f"IEMOCAP Session{session}")
    evals = sorted(check_dir(base / "dialog" / "EmoEvaluation", "EmoEvaluation").glob("*.txt"))
    if not evals:
        raise ManifestError(f"{base / 'dialog' / 'EmoEvaluation'}: no label files")
    items = []
    for label_file in evals:
        for where, _, line in read_lines(label_file, "IEMOCAP EmoEvaluation file"):
            if not line.startswith("["):
                continue  # per-annotator lines (C-E1:, A-E2:, ...) and headers
            m = _TURN.match(line)
            if m is None:
                raise ManifestError(f"{where}: expected '[start - end]<TAB>turn<TAB>emotion"
                                    f"<TAB>[V, A, D]', got {line!r}")
            utt, emo = m.group(3), m.group(4)
            if emo not in EMOTIONS:
                continue
            audio = base / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"
            if not audio.is_file():
                raise ManifestError(f"{where}: audio file not found: {audio}")
            items.append({"id": utt, "path": str(audio), "emotion": EMOTIONS[emo],
                          "speaker": speaker_of(utt), "session": session, "_where": where})
    return items


def fold(by_session: dict[int, list[dict]], test_session: int, dev_fraction: float) -> dict:
    """Session ``test_session`` is test; the others are split train/dev by a stable hash of
    the utterance id (``dev_fraction`` of them to dev, like s3prl's valid_ratio 0.2)."""
    rest = [it for s in SESSIONS if s != test_session for it in by_session[s]]
    dev = [it for it in rest if stable_fraction(it["id"]) < dev_fraction]
    train = [it for it in rest if stable_fraction(it["id"]) >= dev_fraction]
    return {"train": train, "dev": dev, "test": by_session[test_session]}


@READERS.register("iemocap")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``er-fold1`` .. ``er-fold5``, ``er`` (= fold 1) and ``pretrain``."""
    dev_fraction = float(cfg.get("dev_fraction", 0.2))
    if not 0 < dev_fraction < 1:
        raise ConfigError(f"corpus.dev_fraction={dev_fraction}: expected 0 < value < 1")
    by_session = {s: add_durations(read_session(root, s)) for s in SESSIONS}
    manifests = {f"er-fold{s}": fold(by_session, s, dev_fraction) for s in SESSIONS}
    manifests["er"] = manifests["er-fold1"]
    manifests["pretrain"] = {s: strip_labels(manifests["er"][s]) for s in ("train", "dev")}
    return manifests, {"emotions": ["neutral", "happy", "sad", "angry"]}, {}
