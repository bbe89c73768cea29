"""LibriMix (Cosentino et al. 2020) for SD as SUPERB prepares it: Kaldi-style directories
``{train,dev,test}/`` with ``wav.scp``, ``segments`` and ``utt2spk`` (s3prl's LibriMix fork,
``generate_librimix_sd.sh`` + ``scripts/prepare_diarization.py``)."""

from __future__ import annotations

from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_dir,
    read_lines,
    split_ws,
    strip_labels,
)
from speechssl.errors import ManifestError

SPLITS = ("train", "dev", "test")


def read_table(path: Path, what: str, columns: int) -> dict[str, tuple[str, list[str]]]:
    """Kaldi table: first column the key, then ``columns - 1`` fields (the last field of
    a 2-column table keeps its spaces). Returns {key: (where, fields)}."""
    table: dict[str, tuple[str, list[str]]] = {}
    for where, _, line in read_lines(path, what):
        fields = line.split(None, 1) if columns == 2 else split_ws(line)
        if len(fields) != columns:
            raise ManifestError(f"{where}: expected {columns} fields, got {line!r}")
        if fields[0] in table:
            raise ManifestError(f"{where}: duplicate key {fields[0]!r} "
                                f"(first at {table[fields[0]][0]})")
        table[fields[0]] = (where, fields[1:])
    return table


def read_split(split_dir: Path) -> list[dict]:
    """One Kaldi directory -> one item per recording: id, path, segments
    [{start, end, speaker}] (seconds, sorted by start), speakers (by first turn), speaker."""
    wavs = read_table(split_dir / "wav.scp", "Kaldi wav.scp", 2)
    segs = read_table(split_dir / "segments", "Kaldi segments file", 4)
    utt2spk = read_table(split_dir / "utt2spk", "Kaldi utt2spk file", 2)
    turns: dict[str, list[dict]] = {rec: [] for rec in wavs}
    for utt, (where, (rec, start, end)) in segs.items():
        if rec not in wavs:
            raise ManifestError(f"{where}: recording {rec!r} is not in {split_dir / 'wav.scp'}")
        if utt not in utt2spk:
            raise ManifestError(f"{where}: segment {utt!r} is not in {split_dir / 'utt2spk'}")
        try:
            t0, t1 = float(start), float(end)
        except ValueError:
            raise ManifestError(f"{where}: start/end must be seconds, got {start!r} {end!r}") \
                from None
        if not 0 <= t0 < t1:
            raise ManifestError(f"{where}: expected 0 <= start < end, got {t0} {t1}")
        turns[rec].append({"start": t0, "end": t1, "speaker": utt2spk[utt][1][0].strip()})
    items = []
    for rec, (where, (path,)) in wavs.items():
        path = path.strip()
        if path.endswith("|") or path == "-":
            raise ManifestError(f"{where}: piped wav.scp entries are not supported; give a file")
        audio = Path(path) if Path(path).is_absolute() else split_dir / path
        if not audio.is_file():
            raise ManifestError(f"{where}: audio file not found: {audio}")
        segments = sorted(turns[rec], key=lambda s: (s["start"], s["end"]))
        if not segments:
            raise ManifestError(f"{where}: recording {rec!r} has no lines in "
                                f"{split_dir / 'segments'}")
        speakers = list(dict.fromkeys(s["speaker"] for s in segments))
        items.append({"id": rec, "path": str(audio.resolve()), "segments": segments,
                      "speakers": speakers, "speaker": "+".join(speakers)})
    return items


@READERS.register("librimix")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``sd`` (train/dev/test) and ``pretrain`` from ``<root>/{train,dev,test}``."""
    sd = {s: add_durations(read_split(check_dir(root / s, f"LibriMix Kaldi-style {s}")))
          for s in SPLITS}
    for items in sd.values():
        for it in items:
            last = max(seg["end"] for seg in it["segments"])
            if last > it["duration"] + 0.05:
                raise ManifestError(f"{it['path']}: a segment ends at {last:.2f} s, after the "
                                    f"audio ({it['duration']:.2f} s)")
    return {"sd": sd, "pretrain": {s: strip_labels(sd[s]) for s in ("train", "dev")}}, {}, {}
