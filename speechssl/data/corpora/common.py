"""Shared pieces of the real-corpus readers: the manifest cache keyed by corpus root and
options, the record of the source files a scan read (a changed one means a rescan), audio
durations from file headers, line/file checks whose errors name the offending file (SUPERB,
Yang et al. 2021: every task reads a published corpus layout), and the train/dev split and
manifests of the text sets (GLUE, SQuAD, CoNLL-U)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import soundfile as sf

from speechssl.atomic import atomic_write_text
from speechssl.data.manifest import write_manifest
from speechssl.errors import AudioError, ConfigError, ManifestError

FORMAT_VERSION = 2  # 2: meta.json records the source files read (older caches are rescanned)

# manifests[subset][split] -> items; every item has id, path (absolute), duration.
Manifests = dict[str, dict[str, list[dict]]]


def cache_dir(data_dir: str | os.PathLike, name: str, root: Path, options: dict) -> Path:
    """``<data_dir>/corpora/<name>-<12 hex>``: one cache per (corpus, root, options)."""
    key = json.dumps({"name": name, "root": str(root), "options": options,
                      "format": FORMAT_VERSION}, sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    return Path(data_dir) / "corpora" / f"{name}-{digest}"


def utf8_name(path: Path) -> Path:
    """``path`` if its name is UTF-8 (manifests are JSON text, ids are text), else
    ManifestError naming the directory and the name's bytes (Python keeps an undecodable
    name as lone surrogates, which fail far later with a reason about something else)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{path.parent}: file name {os.fsencode(path.name)!r} is not UTF-8: "
                            "rename or remove it") from None
    return path


def check_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else ManifestError naming it and ``what`` it holds."""
    if not path.is_dir():
        raise ManifestError(f"{path}: {what} directory not found")
    return path


# the source files (lists, transcripts, label files) of the scan running in this context:
# {absolute path: {"size", "mtime_ns"}}, filled by check_file (every reader opens its
# sources through it, directly or through read_lines / read_csv)
_SOURCES: ContextVar[dict[str, dict] | None] = ContextVar("corpus_sources", default=None)


@contextmanager
def recording_sources() -> Iterator[dict[str, dict]]:
    """The source files that :func:`check_file` sees in the body, with their size and
    mtime_ns (recorded in the cache's meta.json: a change means a rescan)."""
    token = _SOURCES.set({})
    try:
        yield _SOURCES.get()
    finally:
        _SOURCES.reset(token)


def file_stamp(path: str | os.PathLike) -> dict:
    """{"size", "mtime_ns"} of a file (one stat, nothing read)."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def changed_source(meta: dict) -> str | None:
    """Why a cache's recorded sources are out of date (the first source file changed or
    removed since the scan), or None when every one is as it was."""
    for path, stamp in sorted(meta["sources"].items()):
        try:
            now = file_stamp(path)
        except OSError:
            return f"{path} was removed"
        if now != stamp:
            return f"{path} changed"
    return None


def check_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else ManifestError naming it and ``what`` it is. Inside
    :func:`recording_sources` the file is recorded as a source of the scan."""
    if not path.is_file():
        raise ManifestError(f"{path}: {what} not found")
    sources = _SOURCES.get()
    if sources is not None:
        sources[str(Path(path).resolve())] = file_stamp(path)
    return path


def read_lines(path: Path, what: str) -> Iterator[tuple[str, int, str]]:
    """Yield ``(where, lineno, stripped line)`` for non-blank lines; ``where`` is
    ``<path>:<lineno>`` for error messages. Missing or undecodable files raise
    ManifestError naming the file."""
    check_file(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read {what} ({exc})") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield f"{path}:{lineno}", lineno, line


def read_csv(path: Path, columns: Iterable[str], what: str) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, row)`` for each data row of a CSV with a header naming ``columns``."""
    check_file(path, what)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: cannot read {what} ({exc})") from exc
    if not rows:
        raise ManifestError(f"{path}: {what} is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ManifestError(f"{path}:1: {what} header lacks column(s) {', '.join(missing)} "
                            f"(header: {','.join(header)})")
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ManifestError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
        yield f"{path}:{lineno}", dict(zip(header, (c.strip() for c in row), strict=True))


def audio_duration(path: str) -> float:
    """Seconds of audio from the file header (no decoding); AudioError names the file."""
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(path)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioError(f"{path}: cannot read audio header ({exc})") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: audio file has zero samples")
    return round(info.frames / info.samplerate, 4)


def add_durations(items: list[dict], workers: int = 8) -> list[dict]:
    """Set ``item["duration"]`` from each item's audio header (threads: I/O bound)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item, dur in zip(items, pool.map(audio_duration, [it["path"] for it in items]),
                             strict=True):
            item["duration"] = dur
    return items


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone (SHA-1), for reproducible splits."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def strip_labels(items: list[dict]) -> list[dict]:
    """Items for the ``pretrain`` subset: id, path, duration and speaker only."""
    keep = ("id", "path", "duration", "speaker", "_where")
    return [{k: it[k] for k in keep if k in it} for it in items]


def option_list(cfg, key: str) -> list[str]:
    """``cfg[key]`` as a list of strings (a single string is one element)."""
    value = cfg.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        raise ConfigError(f"corpus.{key}={value!r}: expected a list of names") from None


def check_unique_ids(items: list[dict], what: str) -> None:
    """ManifestError at the second item with an id already seen, naming where both came
    from: the source file and line (``item["_where"]``, set by the reader) or the audio file."""
    seen: dict[str, dict] = {}
    for it in items:
        first = seen.setdefault(it["id"], it)
        if first is not it:
            raise ManifestError(f"{_origin(it)}: duplicate id {it['id']!r} in {what} "
                                f"(first at {_origin(first)})")


def _origin(item: dict) -> str:
    return str(item.get("_where") or item.get("path") or item["id"])


def write_cache(out: Path, name: str, root: Path, manifests: Manifests, meta: dict,
                extra_files: dict[str, str] | None = None,
                sources: dict[str, dict] | None = None) -> dict:
    """Check ids are unique per split, write every manifest and extra file, then
    ``meta.json`` last (the completion mark), with the ``sources`` the scan read."""
    for subset, splits in manifests.items():
        for split, items in splits.items():
            check_unique_ids(items, f"{name} {subset}/{split}")
    counts, hours = {}, {}
    for subset, splits in manifests.items():
        for split, items in splits.items():
            if not items:
                raise ManifestError(f"{root}: {name} has no items for subset {subset!r} "
                                    f"split {split!r}")
            write_manifest(out / "manifests" / subset / f"{split}.jsonl", items)
        counts[subset] = {s: len(v) for s, v in splits.items()}
        hours[subset] = round(sum(it["duration"] for v in splits.values() for it in v) / 3600, 4)
    for rel, text in (extra_files or {}).items():
        atomic_write_text(out / rel, text)
    full = {"name": name, "root": str(root), "format_version": FORMAT_VERSION,
            "subsets": sorted(manifests), "counts": counts, "hours": hours, **meta,
            "sources": sources or {}}
    atomic_write_text(out / "meta.json", json.dumps(full, indent=1, sort_keys=True) + "\n")
    return full


_SPACES = re.compile(r"\s+")


def split_ws(line: str) -> list[str]:
    """Whitespace-split (tabs and runs of spaces alike)."""
    return _SPACES.split(line.strip())


# --------------------------------------------------------------------------- text sets
# GLUE, SQuAD, CoNLL-U: no audio. Where the test labels are hidden (GLUE, SQuAD) the official
# dev set is our test split and ``corpus.dev_fraction`` of the official training set
# (chosen by a hash of the item id, so it is stable) is our dev split.


def dev_fraction(cfg) -> float:
    """``corpus.dev_fraction`` (default 0.1): the share of an official training set that
    becomes our dev split (text sets whose test labels are hidden)."""
    frac = float(cfg.get("dev_fraction", 0.1))
    if not 0.0 < frac < 1.0:
        raise ConfigError(f"corpus.dev_fraction={frac}: must be between 0 and 1")
    return frac


def train_dev_split(items: list[dict], frac: float, where: Path) -> dict[str, list[dict]]:
    """{"train", "dev"}: ``frac`` of the items (chosen by a hash of the item id, so it is
    stable) are dev."""
    dev = [it for it in items if stable_fraction(it["id"]) < frac]
    train = [it for it in items if stable_fraction(it["id"]) >= frac]
    if not train or not dev:
        raise ManifestError(f"{where}: too few items ({len(items)}) for a train/dev split")
    return {"train": train, "dev": dev}


def write_text_manifests(out: Path, subset: str, splits: dict[str, list[dict]],
                         meta: dict) -> tuple:
    """Manifests written here (text items have no audio durations); returns what
    load_real_corpus expects, with the subsets and counts in the meta."""
    for split, items in splits.items():
        check_unique_ids(items, f"{subset}/{split}")
    for split, items in splits.items():
        write_manifest(out / "manifests" / subset / f"{split}.jsonl", items)
    counts = {subset: {s: len(v) for s, v in splits.items()}}
    return {}, {"modality": "text", "subsets": [subset], "counts": counts, "hours": {}, **meta}, {}
