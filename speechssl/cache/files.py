"""The files of one feature cache directory and how they are read and checked: the format
constants, the manifest and index checks, and :class:`CachedFeatures` (RAM or memory-mapped
per-layer reads). The layout is in speechssl/cache/__init__.py."""

from __future__ import annotations

import hashlib
import json
import operator
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from speechssl.errors import ConfigError, SpeechSSLError

FORMAT = 1                  # bump when the layout changes: old caches become other directories
DTYPE = np.float16
ITEMSIZE = 2
MANIFEST, PROGRESS, ORDER, INDEX = "manifest.json", "progress.json", "order.i64", "index.i64"
SAMPLE_BYTES = 1 << 20      # head and tail of each layer file checked on a memory-mapped open
RAM_FRACTION = 0.4          # load the requested layers into RAM when they fit this share of
                            # the available memory; memory-map them otherwise


class StaleCache(SpeechSSLError):
    """A cache directory that must not be used; the message is the reason."""


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


# ---------------------------------------------------------------- small helpers


def _plain(obj):
    """A JSON round trip: OmegaConf containers, tuples, paths -> plain comparable values."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()


def _item_id(item: dict, i: int) -> str:
    return str(item.get("id", item.get("path", i)))


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
