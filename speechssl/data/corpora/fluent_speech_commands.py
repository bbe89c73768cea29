"""Fluent Speech Commands (Lugosch et al. 2019) for IC: ``data/{train,valid,test}_data.csv``
with columns path, speakerId, transcription, action, object, location."""

from __future__ import annotations

from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import add_durations, read_csv, strip_labels
from speechssl.errors import ManifestError

COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")
SPLITS = {"train": "train_data.csv", "dev": "valid_data.csv", "test": "test_data.csv"}


def read_split(root: Path, csv_name: str) -> list[dict]:
    """One split CSV -> items with text, action, object, location, speaker."""
    items, seen = [], set()
    for where, row in read_csv(root / "data" / csv_name, COLUMNS, "Fluent Speech Commands CSV"):
        if not all(row[c] for c in COLUMNS):
            empty = [c for c in COLUMNS if not row[c]]
            raise ManifestError(f"{where}: empty field(s) {', '.join(empty)}")
        audio = root / row["path"]
        if not audio.is_file():
            raise ManifestError(f"{where}: audio file not found: {audio}")
        uid = f"{row['speakerId']}/{audio.stem}"
        if uid in seen:
            raise ManifestError(f"{where}: duplicate utterance {row['path']!r}")
        seen.add(uid)
        items.append({"id": uid, "path": str(audio), "text": row["transcription"],
                      "action": row["action"], "object": row["object"],
                      "location": row["location"], "speaker": row["speakerId"]})
    if not items:
        raise ManifestError(f"{root / 'data' / csv_name}: no rows")
    return items


@READERS.register("fluent_speech_commands")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``ic`` (train/dev=valid/test, the published speaker-disjoint splits) and
    ``pretrain``."""
    ic = {split: add_durations(read_split(root, name)) for split, name in SPLITS.items()}
    return {"ic": ic, "pretrain": {s: strip_labels(ic[s]) for s in ("train", "dev")}}, {}, {}
