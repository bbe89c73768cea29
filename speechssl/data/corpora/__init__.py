"""Real corpora read from a user's copy in its published layout (SUPERB, Yang et al. 2021).

Each module registers a reader that scans one layout once and returns manifests with the same fields as the
synthesized corpus; :func:`load_real_corpus` caches them under ``<data_dir>/corpora/``
keyed by the corpus root and options, so every corpus is read the same way afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from speechssl.data.corpora.common import cache_dir, write_cache
from speechssl.errors import ConfigError
from speechssl.registry import Registry

# name -> scan(root, options, out) -> (manifests, meta, extra); each reader module under
# speechssl/data/corpora/ registers its own (``@READERS.register("librispeech")``)
READERS = Registry("corpus", packages=("speechssl.data.corpora",))

# config keys that choose where/how to read, not what is read
_NOT_OPTIONS = ("name", "root", "rescan")


def corpus_root(cfg) -> Path:
    """The absolute ``corpus.root`` directory; ConfigError if unset or not a directory."""
    if OmegaConf.is_missing(cfg, "root") or not cfg.get("root"):
        raise ConfigError(f"corpus.root is not set: point it at your copy of {cfg.name}, "
                          f"e.g. corpus={cfg.name} corpus.root=/data/{cfg.name} (docs/corpora.md)")
    root = Path(os.path.expanduser(str(cfg.root))).resolve()
    if not root.is_dir():
        raise ConfigError(f"corpus.root={cfg.root!r}: directory not found ({root})")
    return root


def options(cfg) -> dict:
    """The reader options of ``cfg`` (everything but name/root/rescan), as plain data."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return {k: v for k, v in plain.items() if k not in _NOT_OPTIONS}


def load_real_corpus(cfg, data_dir: str | os.PathLike, progress: bool = True):
    """Scan ``cfg.root`` once into ``<data_dir>/corpora/<name>-<hash>`` and return the Corpus.

    A cache with a ``meta.json`` is reused; ``corpus.rescan=true`` forces a new scan.
    """
    from speechssl.data.corpus import Corpus

    name = str(cfg.name)
    if name not in READERS:
        raise ConfigError(f"unknown corpus {name!r}; available: synth, "
                          f"{', '.join(READERS.names())}")
    root = corpus_root(cfg)
    opts = options(cfg)
    out = cache_dir(data_dir, name, root, opts)
    meta_file = out / "meta.json"
    if cfg.get("rescan") or not meta_file.is_file():
        if progress:
            print(f"[corpus] scanning {name} at {root} -> {out}")
        manifests, meta, extra = READERS.get(name)(root, OmegaConf.create(opts), out)
        meta = write_cache(out, name, root, manifests, meta, extra)
    else:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    return Corpus(name=name, root=out, meta=meta)
