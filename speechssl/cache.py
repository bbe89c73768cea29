"""Frozen features: every layer of a frozen upstream, extracted once per (upstream weights,
corpus split) into fp16 files on disk and reused by every probe step, epoch, run and task
that reads the same items, instead of re-running the upstream (docs/cache.md).

One cache directory per (key, items, format) under ``cache_dir``::

    <upstream>-<corpus>-<split>-<hash>/
      manifest.json      written last: the key, item ids, N, L, D, frames, sizes, CRC32s
      index.i64          (N, 2) int64: first frame and frame count of each item
      layer000.f16 ...   one (total_frames, D) float16 file per layer (per-layer reads)
      progress.json      while extracting: items done, bytes and running CRC32s committed
      order.i64          while extracting: (item, frames) in the order they were written
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import operator
import os
import re
import shutil
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechssl import distributed as dist
from speechssl.atomic import atomic_write, atomic_write_text
from speechssl.data.batching import AudioDataset, LengthBucketSampler, collate_audio
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.upstream.base import Upstream

FORMAT = 1                  # bump when the layout changes: old caches become other directories
DTYPE = np.float16
ITEMSIZE = 2
MANIFEST, PROGRESS, ORDER, INDEX = "manifest.json", "progress.json", "order.i64", "index.i64"
COMMIT_BYTES = 256 << 20    # commit progress after this many bytes written ...
COMMIT_SECONDS = 60.0       # ... or this many seconds, whichever comes first
SAMPLE_BYTES = 1 << 20      # head and tail of each layer file checked on a memory-mapped open
RAM_FRACTION = 0.4          # load the requested layers into RAM when they fit this share of
                            # the available memory; memory-map them otherwise


class StaleCache(SpeechSSLError):
    """A cache directory that must not be used; the message is the reason."""


# ---------------------------------------------------------------- the entry point


def split_features(upstream: Upstream, items: list[dict], device: torch.device, *,
                   key: dict, cfg, layers: list[int] | None = None, progress: bool = True,
                   desc: str = "features") -> Sequence[Tensor] | None:
    """The frozen features of one split, indexed like ``items``: one (L, T_i, D) fp16 tensor
    per item (only ``layers`` when given), or None when the split runs on the fly
    (``cache=false``, or its features exceed ``cache_budget_gb``).

    ``key`` names what the features depend on (upstream weights hash, upstream config,
    corpus, split); ``cfg`` is the run's root config (``cache``, ``cache_dir``,
    ``cache_budget_gb``, ``num_workers``, ``downstream.optim.extract_batch_seconds``).

    The first call extracts every layer into ``cache_dir`` (rank 0 under torchrun; the other
    ranks wait, then read); later calls with the same key and items read the files without
    running the upstream. An interrupted extraction resumes from its last committed chunk;
    a stale, truncated or corrupt cache is reported in one line and rebuilt. Text items get
    ``item["_tokens"]`` in every case.
    """
    if not cfg.get("cache", True):
        return None
    check_modality(upstream, items)
    encoded = encode_items(upstream, items) if _is_text(upstream) else None
    if not items:
        return []
    directory = cache_root(cfg) / cache_name(key, items, encoded is not None)
    expect = _expectation(key, items, encoded is not None)
    feats = None
    with dist.main_first():  # rank 0 extracts and writes; the others then read
        if dist.is_main():
            with _locked(directory):  # other processes on the same split wait their turn
                feats = _load_or_build(
                    upstream, items, encoded, device, directory, expect, layers,
                    batch_seconds=float(cfg.downstream.optim.extract_batch_seconds),
                    num_workers=int(cfg.get("num_workers", 0) or 0),
                    budget_gb=float(cfg.get("cache_budget_gb", 20)), progress=progress,
                    desc=desc)
    cached = dist.broadcast_object(feats is not None)
    if not dist.is_main() and cached:
        feats = CachedFeatures.open(directory, expect, layers)
    return feats


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``<cache_dir>/.<name>.lock`` (a sweep's parallel jobs, or two runs
    on one machine, build a cache once and never write the same files together)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def check_cache_config(cfg) -> None:
    """ConfigError naming the key for a bad ``cache``, ``cache_dir`` or ``cache_budget_gb``."""
    on = cfg.get("cache", True)
    if not isinstance(on, bool):
        raise ConfigError(f"cache={on!r}: must be true or false")
    where = cfg.get("cache_dir")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise ConfigError(f"cache_dir={where!r}: must be a directory path")
    budget = cfg.get("cache_budget_gb", 20)
    if (isinstance(budget, bool) or not isinstance(budget, int | float)
            or not math.isfinite(budget) or budget < 0):
        raise ConfigError(f"cache_budget_gb={budget!r}: must be a number of GB >= 0 "
                          f"(0 = never cache; cache=false also turns the cache off)")


def cache_root(cfg) -> Path:
    """``cfg.cache_dir``, default ``<out_dir>/features``."""
    root = cfg.get("cache_dir") or Path(cfg.get("out_dir", "outputs")) / "features"
    return Path(str(root))


def cache_name(key: dict, items: list[dict], text: bool = False) -> str:
    """The directory name of a cache: readable prefix + a hash of the key, the items and
    the storage format (so a different item list or format is a different cache)."""
    key = _plain(key)
    parts = [str(key.get(k, "")) for k in ("upstream", "corpus", "split") if key.get(k)]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[:80] or "features"
    digest = _sha({"format": FORMAT, "dtype": "float16", "key": key,
                   "items": items_digest(items, text)})
    return f"{slug}-{digest[:16]}"


def items_digest(items: list[dict], text: bool = False) -> str:
    """A hash of what identifies the items' inputs: id and duration (audio), id and the text
    fields (text), in order."""
    fields = ("text", "text_pair", "words") if text else ()
    rows = [[_item_id(it, i), it.get("duration")] + [it.get(f) for f in fields]
            for i, it in enumerate(items)]
    return _sha(rows)


# ---------------------------------------------------------------- reading a cache


class CachedFeatures(Sequence):
    """The cached features of one split: ``feats[i]`` is item i's (L', T_i, D) fp16 tensor
    (L' = the requested layers). Loaded into RAM as one (L', total_frames, D) tensor when
    it fits (items are views into it, no copies), else memory-mapped per layer (one layer:
    a view of the map; several: one copy into a new tensor).

    ``lengths`` holds the T_i without reading any features."""

    def __init__(self, directory: Path, manifest: dict, index: np.ndarray, layers: list[int],
                 ram: Tensor | None, maps: list[np.memmap] | None):
        self.directory, self.manifest = Path(directory), manifest
        self.layers = layers
        self.dim = int(manifest["dim"])
        self._starts = index[:, 0].copy()
        self._frames = index[:, 1].copy()
        self.lengths: list[int] = self._frames.tolist()
        self._ram, self._maps = ram, maps

    # -- opening
    @classmethod
    def open(cls, directory: str | os.PathLike, expect: dict | None = None,
             layers: list[int] | None = None, in_ram: bool | None = None) -> CachedFeatures:
        """Open a complete cache after checking it (raises StaleCache with the reason).

        Always: the manifest (format, key, item ids, N, L, D, frame counts), the index
        (size, CRC32, consistency) and the size of each requested layer file. In RAM (the
        default when the requested layers fit ``RAM_FRACTION`` of the available memory):
        the full CRC32 of every requested layer file, computed on the loaded bytes.
        Memory-mapped: the CRC32 of the first and last MiB of each requested layer file.
        """
        directory = Path(directory)
        manifest = _read_manifest(directory, expect)
        L, D, total = manifest["num_layers"], manifest["dim"], manifest["total_frames"]
        chosen = _layer_list(layers, L)
        index = _read_index(directory, manifest)
        layer_bytes = total * D * ITEMSIZE
        for k in chosen:
            path = directory / _layer_file(k)
            if not path.is_file():
                raise StaleCache(f"layer file {path.name} is missing")
            size = path.stat().st_size
            if size != layer_bytes:
                raise StaleCache(f"layer file {path.name} has {size} bytes, expected "
                                 f"{layer_bytes} (truncated or overwritten)")
        if in_ram is None:
            in_ram = layer_bytes * len(chosen) <= RAM_FRACTION * _available_memory()
        ram = maps = None
        if in_ram:
            ram = torch.empty((len(chosen), total, D), dtype=torch.float16)
            for j, k in enumerate(chosen):
                buf = ram[j].numpy()
                _read_into(directory / _layer_file(k), buf)
                if zlib.crc32(buf) != manifest["crc32"][k]:
                    raise StaleCache(f"layer file {_layer_file(k)} fails its CRC32 check")
        else:
            maps = []
            for k in chosen:
                path = directory / _layer_file(k)
                head, tail = _sample_crcs(path, layer_bytes)
                if (head, tail) != (manifest["head_crc32"][k], manifest["tail_crc32"][k]):
                    raise StaleCache(f"layer file {path.name} fails its CRC32 check "
                                     f"(first/last MiB)")
                maps.append(_memmap(path, total, D))
        return cls(directory, manifest, index, chosen, ram, maps)

    # -- the Sequence
    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        s, t = int(self._starts[i]), int(self._frames[i])
        if self._ram is not None:
            return self._ram[:, s: s + t]
        if len(self._maps) == 1:
            return torch.from_numpy(self._maps[0][s: s + t]).unsqueeze(0)
        out = torch.empty((len(self._maps), t, self.dim), dtype=torch.float16)
        for j, m in enumerate(self._maps):
            out[j].copy_(torch.from_numpy(m[s: s + t]))
        return out

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def in_ram(self) -> bool:
        return self._ram is not None

    @property
    def nbytes(self) -> int:
        return int(self._frames.sum()) * self.dim * ITEMSIZE * len(self.layers)

    # pickling (DataLoader workers under spawn) reopens the files memory-mapped, no copy
    def __getstate__(self) -> dict:
        return {"directory": str(self.directory), "layers": self.layers}

    def __setstate__(self, state: dict) -> None:
        directory = Path(state["directory"])
        manifest = json.loads((directory / MANIFEST).read_text())
        index = _read_index(directory, manifest)
        maps = [_memmap(directory / _layer_file(k), manifest["total_frames"], manifest["dim"])
                for k in state["layers"]]
        self.__init__(directory, manifest, index, state["layers"], None, maps)


# ---------------------------------------------------------------- building a cache


def _load_or_build(upstream, items, encoded, device, directory: Path, expect: dict,
                   layers, *, batch_seconds, num_workers, budget_gb, progress, desc):
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
    if not _build(upstream, items, encoded, device, directory, expect, batch_seconds=batch_seconds,
                  num_workers=num_workers, budget_gb=budget_gb, progress=progress, desc=desc):
        return None
    return CachedFeatures.open(directory, expect, layers)


def _build(upstream, items, encoded, device, directory: Path, expect: dict, *, batch_seconds,
           num_workers, budget_gb, progress, desc) -> bool:
    """Extract every layer of ``items`` into ``directory`` (resuming committed progress);
    False, with one line printed, when the split is over the budget."""
    t0 = time.time()
    n = len(items)
    state = _resume_state(directory, expect)
    done = _done_items(directory, state) if state else set()
    todo = [i for i in range(n) if i not in done]
    frames_est = _estimate_frames(upstream, items, encoded)
    writer = None
    batches = _batches(upstream, items, todo, encoded, device, batch_seconds, num_workers)
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


def _estimate_frames(upstream, items, encoded) -> float:
    """Frames the split will have: tokens (text), or duration x sample_rate / downsample_rate."""
    if encoded is not None:
        return float(sum(len(e.ids) for e in encoded))
    seconds = sum(float(it.get("duration", 0.0)) for it in items)
    return seconds * upstream.sample_rate / upstream.downsample_rate


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


# ---------------------------------------------------------------- extraction


def _is_text(upstream) -> bool:
    return getattr(upstream, "modality", "audio") == "text"


def encode_items(upstream: Upstream, items: list[dict]) -> list:
    """Tokenize text items with the upstream's tokenizer; sets ``item["_tokens"]``."""
    encoded = [upstream.encode(it) for it in items]
    for it, enc in zip(items, encoded, strict=True):
        it["_tokens"] = enc
    return encoded


def _batches(upstream: Upstream, items: list[dict], todo: list[int], encoded, device,
             batch_seconds: float, num_workers: int = 0, max_tokens: int | None = None
             ) -> Iterator[tuple[list[int], Tensor, list[int]]]:
    """Run the frozen upstream over ``items[todo]`` in length-bucketed batches (shortest
    first, under torch.inference_mode); yields (item indices (B,), hidden states
    (L, B, T, D) fp16 on the CPU, valid frames (B,)). Audio is read by ``num_workers``
    DataLoader workers, pinned on CUDA; text batches hold at most ``max_tokens`` (default
    ``batch_seconds`` x 100) padded tokens."""
    if not todo:
        return
    upstream.eval()
    if encoded is not None:
        from speechssl.text.data import pad_ids

        sampler = LengthBucketSampler([len(encoded[i].ids) for i in todo],
                                      max_total=max_tokens or int(batch_seconds * 100),
                                      shuffle=False)
        for local in sampler:
            idx = [todo[j] for j in local]
            ids, lengths = pad_ids([torch.tensor(encoded[i].ids) for i in idx], upstream.pad_id)
            with torch.inference_mode():
                out = upstream(ids.to(device), lengths.to(device))
                stacked = _stack(out)
            yield idx, stacked, out.lengths.tolist()
        return
    sampler = LengthBucketSampler([float(items[i]["duration"]) for i in todo],
                                  max_total=batch_seconds, shuffle=False)
    batches = [[todo[j] for j in local] for local in sampler]
    pin = device.type == "cuda"
    loader = DataLoader(AudioDataset(items, sample_rate=upstream.sample_rate),
                        batch_sampler=batches, collate_fn=collate_audio,
                        num_workers=num_workers, pin_memory=pin)
    for batch in loader:
        with torch.inference_mode():
            out = upstream(batch["audio"].to(device, non_blocking=pin),
                           batch["lengths"].to(device, non_blocking=pin))
            stacked = _stack(out)
        yield batch["index"].tolist(), stacked, out.lengths.tolist()


def _stack(out) -> Tensor:
    """UpstreamOutput -> (L, B, T, D) fp16 on the CPU (cast on the device: half the copy)."""
    return torch.stack([h.to(torch.float16) for h in out.hidden_states], dim=0).cpu()


def extract_features(upstream: Upstream, items: list[dict], device: torch.device,
                     batch_seconds: float = 160.0, num_workers: int = 0,
                     progress: bool = True, desc: str = "features") -> list[Tensor]:
    """Run the frozen upstream over ``items`` in memory (no cache); returns one (L, T_i, D)
    fp16 CPU tensor per item, in item order. Batches are length-bucketed by total padded
    duration (text upstreams: see :func:`extract_text_features`)."""
    check_modality(upstream, items)
    if _is_text(upstream):
        return extract_text_features(upstream, items, device, max_tokens=int(batch_seconds * 100),
                                     progress=progress, desc=desc)
    return _collect(upstream, items, None, device, batch_seconds, num_workers, progress, desc)


def extract_text_features(upstream: Upstream, items: list[dict], device: torch.device,
                          max_tokens: int = 16000, progress: bool = True,
                          desc: str = "features") -> list[Tensor]:
    """Text: tokenize each item with the upstream's own tokenizer, run padded batches of at
    most ``max_tokens`` padded tokens (``extract_batch_seconds`` x 100, one token standing
    for one 10 ms frame); returns one (L, T_i, D) fp16 tensor per item (T_i tokens).

    Each item gets ``item["_tokens"]``: the Encoded (ids, word_ids, offsets, sequence_ids)
    that the text tasks use to map tokens back to words, labels and answer spans.
    """
    encoded = encode_items(upstream, items)
    return _collect(upstream, items, encoded, device, max_tokens / 100, 0, progress, desc,
                    max_tokens=max_tokens)


def _collect(upstream, items, encoded, device, batch_seconds, num_workers, progress, desc,
             max_tokens=None):
    feats: list[Tensor | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="utt", leave=False)
    for idx, stacked, lengths in _batches(upstream, items, list(range(len(items))), encoded,
                                          device, batch_seconds, num_workers, max_tokens):
        for b, (i, n) in enumerate(zip(idx, lengths, strict=True)):
            feats[i] = stacked[:, b, :n].clone()
        bar.update(len(idx))
    bar.close()
    return feats


def check_modality(upstream: Upstream, items: list[dict]) -> None:
    """ConfigError when text items meet an audio upstream or audio items a text upstream."""
    if not items:
        return
    modality = getattr(upstream, "modality", "audio")
    item_is_text = "path" not in items[0] and ("text" in items[0] or "words" in items[0])
    if item_is_text != (modality == "text"):
        kind = "text" if item_is_text else "audio"
        raise ConfigError(f"upstream {getattr(upstream, 'name', type(upstream).__name__)!r} "
                          f"reads {modality} but the task's items are {kind} "
                          f"({items[0].get('_manifest', 'items')}): pair text tasks with a text "
                          f"upstream (bert, gpt, hf text models) and speech tasks with an audio one")


def collate_features(feats: Sequence[Tensor], indices: list[int],
                     device: torch.device) -> tuple[Tensor, Tensor]:
    """Selected (L, T_i, D) features -> padded (L, B, T_max, D) float32 and (B,) lengths."""
    chosen = [feats[i] for i in indices]
    L, _, D = chosen[0].shape
    T = max(f.shape[1] for f in chosen)
    out = torch.zeros(L, len(chosen), T, D, dtype=torch.float32)
    for b, f in enumerate(chosen):
        out[:, b, : f.shape[1]] = f
    lengths = torch.tensor([f.shape[1] for f in chosen])
    return out.to(device), lengths.to(device)


# ---------------------------------------------------------------- small helpers


def _plain(obj):
    """A JSON round trip: OmegaConf containers, tuples, paths -> plain comparable values."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()


def _item_id(item: dict, i: int) -> str:
    return str(item.get("id", item.get("path", i)))


def _expectation(key: dict, items: list[dict], text: bool) -> dict:
    return {"key": _plain(key), "items": items_digest(items, text), "n_items": len(items),
            "ids": [_item_id(it, i) for i, it in enumerate(items)]}


def _header_mismatch(record: dict, expect: dict | None) -> str | None:
    if record.get("format") != FORMAT:
        return f"format version {record.get('format')}, expected {FORMAT}"
    if expect is None:
        return None
    if record.get("key") != expect["key"]:
        theirs, ours = record.get("key") or {}, expect["key"]
        fields = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        return f"key differs ({', '.join(fields) or 'type'})"
    if record.get("n_items") != expect["n_items"]:
        return f"{record.get('n_items')} items recorded, {expect['n_items']} expected"
    if record.get("items") != expect["items"]:
        return "item ids or durations differ"
    return None


def _read_manifest(directory: Path, expect: dict | None) -> dict:
    try:
        m = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise StaleCache(f"{MANIFEST} is missing") from None
    except (OSError, ValueError) as e:
        raise StaleCache(f"{MANIFEST} is unreadable ({type(e).__name__})") from None
    reason = _header_mismatch(m, expect)
    if reason:
        raise StaleCache(reason)
    try:
        L, D, total, n = (int(m["num_layers"]), int(m["dim"]), int(m["total_frames"]),
                          int(m["n_items"]))
        if expect is not None and m["ids"] != expect["ids"]:
            raise StaleCache("item ids differ")
        if L < 1 or D < 1 or total < 0 or len(m["ids"]) != n:
            raise StaleCache(f"bad shape in {MANIFEST} (N={n}, L={L}, D={D}, frames={total})")
        if m["layer_bytes"] != total * D * ITEMSIZE:
            raise StaleCache(f"{MANIFEST} shape (frames={total}, D={D}) does not match its "
                             f"layer size {m['layer_bytes']} bytes")
        if not (len(m["crc32"]) == len(m["head_crc32"]) == len(m["tail_crc32"]) == L):
            raise StaleCache(f"{MANIFEST} has {len(m['crc32'])} checksums for {L} layers")
    except (KeyError, TypeError, ValueError) as e:
        raise StaleCache(f"{MANIFEST} lacks or garbles a field ({e})") from None
    return m


def _read_index(directory: Path, m: dict) -> np.ndarray:
    path, n = directory / INDEX, m["n_items"]
    if not path.is_file() or path.stat().st_size != n * 16:
        raise StaleCache(f"{INDEX} is missing or not {n} x 2 int64")
    index = np.fromfile(path, dtype=np.int64).reshape(n, 2)
    if zlib.crc32(index) != m["index_crc32"]:
        raise StaleCache(f"{INDEX} fails its CRC32 check")
    starts, frames = index[:, 0], index[:, 1]
    if (frames < 0).any() or (starts < 0).any() or (starts + frames > m["total_frames"]).any() \
            or int(frames.sum()) != m["total_frames"]:
        raise StaleCache(f"{INDEX} does not match total_frames={m['total_frames']}")
    return index


def _layer_list(layers, L: int) -> list[int]:
    if layers is None:
        return list(range(L))
    out = []
    for k in layers:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not -L <= k < L:
            raise ConfigError(f"layer {k!r} out of range: the upstream has {L} layers")
        out.append(int(k) % L)
    return out


def _layer_file(k: int) -> str:
    return f"layer{k:03d}.f16"


def _memmap(path: Path, total: int, D: int):
    if total == 0:
        return np.zeros((0, D), dtype=DTYPE)
    # copy-on-write: writable views for torch.from_numpy, never written back to the file
    return np.memmap(path, dtype=DTYPE, mode="c", shape=(total, D))


def _read_into(path: Path, buf: np.ndarray) -> None:
    view = memoryview(buf.reshape(-1).view(np.uint8))
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < len(view):
            n = f.readinto(view[pos:])
            if not n:
                raise StaleCache(f"layer file {path.name} ended after {pos} bytes")
            pos += n


def _sample_crcs(path: Path, size: int) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(min(SAMPLE_BYTES, size))
        f.seek(max(0, size - SAMPLE_BYTES))
        tail = f.read(min(SAMPLE_BYTES, size))
    return zlib.crc32(head), zlib.crc32(tail)


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (bytes); the free physical pages elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


__all__ = ["CachedFeatures", "StaleCache", "cache_name", "cache_root", "check_cache_config",
           "check_modality",
           "collate_features", "encode_items", "extract_features", "extract_text_features",
           "items_digest", "split_features"]
