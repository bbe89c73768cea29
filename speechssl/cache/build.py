"""Building a feature cache: one process at a time per directory (a file lock), extraction
that commits its progress and resumes after an interruption, the budget check, and the
completion mark (the manifest, written last)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from speechssl import distributed as dist
from speechssl.atomic import atomic_write, atomic_write_text
from speechssl.cache.files import (
    FORMAT,
    INDEX,
    ITEMSIZE,
    MANIFEST,
    ORDER,
    PROGRESS,
    CachedFeatures,
    StaleCache,
    _header_mismatch,
    _item_id,
    _layer_file,
    _plain,
    _sample_crcs,
    _sha,
)
from speechssl.errors import AudioError, SpeechSSLError
from speechssl.lock import locked

COMMIT_BYTES = 256 << 20    # commit progress after this many bytes written ...
COMMIT_SECONDS = 60.0       # ... or this many seconds, whichever comes first

# ---------------------------------------------------------------- the entry point


def split_features(root: Path, key: dict, items: list[dict], *, text: bool, frames: float,
                   extract: Callable[[list[int]], Iterator[tuple[list[int], Tensor, list[int]]]],
                   budget_gb: float, layers: list[int] | None = None, progress: bool = True,
                   desc: str = "features") -> Sequence[Tensor] | None:
    """The stored features of one split, indexed like ``items``: one (L, T_i, D) fp16 tensor
    per item (only ``layers`` when given), or None when they would exceed ``budget_gb``
    (the caller then runs the upstream on the fly).

    ``key`` names what the features depend on (upstream weights hash, upstream config,
    corpus, split); ``text`` says the items are text (their text fields are part of the
    key); ``frames`` estimates the split's total frames (the budget check);
    ``extract(todo)`` yields (item indices, (L, B, T, D) fp16 CPU layers, valid frames)
    for the item indices ``todo`` (speechssl.features.extract).

    The first call extracts every layer into ``root`` (rank 0 under torchrun; the other
    ranks wait, then read); later calls with the same key and items read the files without
    extracting. An interrupted extraction resumes from its last committed chunk; a stale,
    truncated or corrupt cache is reported in one line and rebuilt.
    """
    expect = _expectation(key, items, text)
    directory = Path(root) / _directory_name(expect)
    feats = None
    with locked(directory, f"[cache] {directory} is being built by another process: waiting"):
        if dist.is_main():  # rank 0 reads or extracts and writes; the others then read
            feats = _load_or_build(items, extract, frames, directory, expect, layers,
                                   budget_gb=budget_gb, progress=progress, desc=desc)
        cached = dist.broadcast_object(feats is not None)
        if not dist.is_main() and cached:
            feats = CachedFeatures.open(directory, expect, layers)
    return feats


def cache_name(key: dict, items: list[dict], text: bool = False) -> str:
    """The directory name of a cache: readable prefix + a hash of the key, the items' inputs
    (:func:`items_digest`) and the storage format (so other items, other audio files or
    another format are another cache)."""
    return _directory_name(_expectation(key, items, text))


def _directory_name(expect: dict) -> str:
    key = expect["key"]
    parts = [str(key.get(k, "")) for k in ("upstream", "corpus", "split") if key.get(k)]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[:80] or "features"
    digest = _sha({"format": FORMAT, "dtype": "float16", "key": key, "items": expect["items"]})
    return f"{slug}-{digest[:16]}"


def items_digest(items: list[dict], text: bool = False) -> str:
    """A hash of what the items' features are computed from, in order: for audio, id,
    duration, path and the file's size and modification time (one ``stat`` per file, no
    audio read: a clip replaced in place is another input); for text, id and the text fields.
    AudioError names a file that cannot be stat'ed."""
    if text:
        fields = ("text", "text_pair", "words")
        rows = [[_item_id(it, i)] + [it.get(f) for f in fields] for i, it in enumerate(items)]
    else:
        rows = [[_item_id(it, i), it.get("duration"), it.get("path"), *_file_stamp(it)]
                for i, it in enumerate(items)]
    return _sha(rows)


def _file_stamp(item: dict) -> tuple[int, int] | tuple[()]:
    """(size, mtime_ns) of the item's audio file; () for an item with no path."""
    if not item.get("path"):
        return ()
    try:
        st = os.stat(item["path"])
    except OSError as e:
        where = f" ({item['_manifest']}:{item['_line']})" if "_manifest" in item else ""
        raise AudioError(f"{item['path']}: cannot read audio file "
                         f"({e.strerror or type(e).__name__}){where}") from None
    return st.st_size, st.st_mtime_ns


def _expectation(key: dict, items: list[dict], text: bool) -> dict:
    return {"key": _plain(key), "items": items_digest(items, text), "n_items": len(items),
            "ids": [_item_id(it, i) for i, it in enumerate(items)]}


# ---------------------------------------------------------------- building a cache


def _load_or_build(items, extract, frames, directory: Path, expect: dict, layers, *,
                   budget_gb, progress, desc):
    """Rank 0: open the complete cache, or resume / start its extraction."""
    if (directory / MANIFEST).is_file():
        try:
            feats = CachedFeatures.open(directory, expect, layers)
            print(f"[cache] {desc}: reading {directory} ({feats.nbytes / 1e6:.1f} MB, "
                  f"{'in RAM' if feats.in_ram else 'memory-mapped'})", flush=True)
            return feats
        except StaleCache as e:
            print(f"[cache] {directory}: {e}; rebuilding", flush=True)
            shutil.rmtree(directory, ignore_errors=True)
    elif directory.exists() and not (directory / PROGRESS).is_file():
        shutil.rmtree(directory, ignore_errors=True)  # no record of anything: start clean
    if not _build(items, extract, frames, directory, expect, budget_gb=budget_gb,
                  progress=progress, desc=desc):
        return None
    return CachedFeatures.open(directory, expect, layers)


def _build(items, extract, frames_est: float, directory: Path, expect: dict, *, budget_gb,
           progress, desc) -> bool:
    """Extract every layer of ``items`` into ``directory`` (resuming committed progress);
    False, with one line printed, when the split is over the budget."""
    t0 = time.time()
    n = len(items)
    state = _resume_state(directory, expect)
    done = _done_items(directory, state) if state else set()
    todo = [i for i in range(n) if i not in done]
    writer = None
    batches = extract(todo)
    bar = tqdm(total=n, initial=len(done), desc=desc, disable=not progress, unit="utt",
               leave=False)
    try:
        if state:
            reason = _over_budget(frames_est, state["num_layers"], state["dim"], budget_gb,
                                  directory, written=state["frames"])
            if reason:
                print(f"[cache] {desc}: {reason}: extracting on the fly "
                      f"(removing the partial cache {directory})", flush=True)
                shutil.rmtree(directory, ignore_errors=True)
                return False
            print(f"[cache] {directory}: resuming extraction at item {len(done)}/{n}",
                  flush=True)
            writer = _Writer(directory, expect, state["num_layers"], state["dim"], state)
        for idx, stacked, lengths in batches:
            L, _, _, D = stacked.shape
            if writer is None:  # the first (shortest) batch tells L and D: check the budget
                reason = _over_budget(frames_est, L, D, budget_gb, directory)
                if reason:
                    print(f"[cache] {desc}: {reason}: extracting on the fly", flush=True)
                    return False
                writer = _Writer(directory, expect, L, D)
            writer.append(idx, stacked, lengths)
            bar.update(len(idx))
            writer.maybe_commit()
        writer.finish(time.time() - t0)  # (resumed with nothing left: writer came from state)
    except BaseException:
        if writer is not None:
            writer.abort()  # keeps every fully written batch for the next run
        raise
    finally:
        bar.close()
        batches.close()
    m = json.loads((directory / MANIFEST).read_text())
    size = m["total_frames"] * m["dim"] * ITEMSIZE * m["num_layers"]
    print(f"[cache] {desc}: wrote {n} items x {m['num_layers']} layers x {m['dim']} "
          f"({size / 1e6:.1f} MB) to {directory} in {time.time() - t0:.1f} s", flush=True)
    return True


class _Writer:
    """Appends batches to the layer files and commits progress atomically: a commit
    fsyncs the files, then replaces progress.json (bytes, items, running CRC32s). On
    resume every file is cut back to its committed size."""

    def __init__(self, directory: Path, expect: dict, L: int, D: int, state: dict | None = None):
        self.directory, self.expect, self.L, self.D = directory, expect, L, D
        directory.mkdir(parents=True, exist_ok=True)
        self.frames = state["frames"] if state else 0
        self.done = state["done"] if state else 0
        self.crc = list(state["crc32"]) if state else [0] * L
        paths = [directory / _layer_file(k) for k in range(L)] + [directory / ORDER]
        sizes = [self.frames * D * ITEMSIZE] * L + [self.done * 16]
        self.files = []
        for path, size in zip(paths, sizes, strict=True):
            f = open(path, "r+b" if state else "wb")  # noqa: SIM115 (closed in close())
            f.truncate(size)
            f.seek(size)
            self.files.append(f)
        self.pending, self.last_commit, self.clean, self.closed = 0, time.time(), True, False
        if not state:
            self.commit()

    def append(self, idx: list[int], stacked: Tensor, lengths: list[int]) -> None:
        """stacked: (L, B, T, D) fp16 CPU; the first lengths[b] frames of item idx[b]."""
        if stacked.shape[0] != self.L or stacked.shape[-1] != self.D:
            raise SpeechSSLError(f"upstream output changed shape during extraction: "
                                 f"{tuple(stacked.shape)} after L={self.L}, D={self.D}")
        chunk = torch.cat([stacked[:, b, :n] for b, n in enumerate(lengths)], dim=1)
        arr = np.ascontiguousarray(chunk.numpy())  # (L, F, D)
        self.clean = False
        for k in range(self.L):
            self.files[k].write(arr[k].data)
            self.crc[k] = zlib.crc32(arr[k], self.crc[k])
        self.files[-1].write(np.asarray([idx, lengths], dtype=np.int64).T.copy().data)
        self.frames += arr.shape[1]
        self.done += len(idx)
        self.pending += arr.nbytes
        self.clean = True

    def maybe_commit(self) -> None:
        if self.pending >= COMMIT_BYTES or time.time() - self.last_commit >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
        record = {**self.expect_header(), "num_layers": self.L, "dim": self.D,
                  "done": self.done, "frames": self.frames, "crc32": self.crc}
        atomic_write_text(self.directory / PROGRESS, json.dumps(record))
        self.pending, self.last_commit = 0, time.time()

    def expect_header(self) -> dict:
        return {"format": FORMAT, "key": self.expect["key"], "items": self.expect["items"],
                "n_items": self.expect["n_items"]}

    def abort(self) -> None:
        if self.closed:
            return
        try:
            if self.clean:  # the last batch was written whole: keep it
                self.commit()
        finally:
            self.close()

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.closed = True

    def finish(self, seconds: float) -> None:
        """Check every item is there, write the index, then the manifest (the completion
        mark), then drop the progress files."""
        self.commit()
        self.close()
        d, n = self.directory, self.expect["n_items"]
        order = np.fromfile(d / ORDER, dtype=np.int64).reshape(-1, 2)
        if len(order) != n or len(np.unique(order[:, 0])) != n:
            raise SpeechSSLError(f"{d}: extraction wrote {len(order)} records for {n} items")
        index = np.zeros((n, 2), dtype=np.int64)
        index[order[:, 0], 0] = np.concatenate([[0], np.cumsum(order[:-1, 1])])
        index[order[:, 0], 1] = order[:, 1]
        atomic_write(d / INDEX, lambda p: index.tofile(p))
        layer_bytes = self.frames * self.D * ITEMSIZE
        samples = [_sample_crcs(d / _layer_file(k), layer_bytes) for k in range(self.L)]
        manifest = {
            **self.expect_header(), "dtype": "float16", "ids": self.expect["ids"],
            "num_layers": self.L, "dim": self.D, "total_frames": self.frames,
            "layer_bytes": layer_bytes, "layer_files": [_layer_file(k) for k in range(self.L)],
            "crc32": self.crc, "head_crc32": [h for h, _ in samples],
            "tail_crc32": [t for _, t in samples], "index_crc32": zlib.crc32(index),
            "extract_seconds": round(seconds, 3), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        atomic_write_text(d / MANIFEST, json.dumps(manifest))
        for name in (PROGRESS, ORDER):
            (d / name).unlink(missing_ok=True)


def _resume_state(directory: Path, expect: dict) -> dict | None:
    """The committed progress of an interrupted extraction, or None (nothing to resume; a
    progress record that does not match is reported and removed)."""
    path = directory / PROGRESS
    if not path.is_file():
        return None
    reason = None
    try:
        state = json.loads(path.read_text())
        reason = _header_mismatch(state, expect)
        if reason is None:
            L, D = int(state["num_layers"]), int(state["dim"])
            if len(state["crc32"]) != L:
                reason = "progress record has a wrong number of CRC32s"
            for k in range(L):
                p = directory / _layer_file(k)
                if reason is None and (not p.is_file()
                                       or p.stat().st_size < state["frames"] * D * ITEMSIZE):
                    reason = f"layer file {p.name} is shorter than its recorded progress"
            order = directory / ORDER
            if reason is None and (not order.is_file() or order.stat().st_size < state["done"] * 16):
                reason = f"{ORDER} is shorter than its recorded progress"
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = f"unreadable progress record ({type(e).__name__})"
    if reason is not None:
        print(f"[cache] {directory}: {reason}; rebuilding", flush=True)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return state


def _done_items(directory: Path, state: dict) -> set[int]:
    order = np.fromfile(directory / ORDER, dtype=np.int64, count=2 * state["done"])
    return set(order.reshape(-1, 2)[:, 0].tolist())


def _over_budget(frames: float, L: int, D: int, budget_gb: float, directory: Path,
                 written: int = 0) -> str | None:
    need = frames * L * D * ITEMSIZE
    if need > budget_gb * 1e9:
        return (f"~{need / 1e9:.2f} GB of fp16 features ({L} layers x {D}) exceed "
                f"cache_budget_gb={budget_gb:g}")
    parent = directory
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    left = need - written * L * D * ITEMSIZE
    if left > free:
        return f"~{left / 1e9:.2f} GB of features to write but {free / 1e9:.2f} GB free at {parent}"
    return None

