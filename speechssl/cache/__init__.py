"""The frozen-feature cache, storage only (speechssl/features.py runs the upstream): every
layer of a frozen upstream, extracted once per (upstream weights, corpus split) into fp16
files on disk and reused by every probe step, epoch, run and task that reads the same
items, instead of re-running the upstream (docs/cache.md). build.py writes a cache,
files.py reads and checks one.

One cache directory per (key, items, format) under ``cache_dir``::

    <upstream>-<corpus>-<split>-<hash>/
      manifest.json      written last: the key, item ids, N, L, D, frames, sizes, CRC32s
      index.i64          (N, 2) int64: first frame and frame count of each item
      layer000.f16 ...   one (total_frames, D) float16 file per layer (per-layer reads)
      progress.json      while extracting: items done, bytes and running CRC32s committed
      order.i64          while extracting: (item, frames) in the order they were written
"""

from speechssl.cache.build import cache_name, items_digest, split_features
from speechssl.cache.files import CachedFeatures, StaleCache

__all__ = ["CachedFeatures", "StaleCache", "cache_name", "items_digest", "split_features"]
