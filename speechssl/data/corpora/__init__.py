"""Real corpora read from a user's copy in its published layout (SUPERB, Yang et al. 2021).

Each module registers a reader that scans one layout and returns manifests with the same
fields as the synthesized corpus; :func:`load_real_corpus` caches them under
``<data_dir>/corpora/`` keyed by the corpus root and options, with the source files the scan
read (lists, transcripts, label files), so every corpus is read the same way afterwards and
is scanned again when one of its sources changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from speechssl import distributed as dist
from speechssl.data.corpora.common import cache_dir, changed_source, recording_sources, write_cache
from speechssl.data.corpus import Corpus, corpus_options, read_meta
from speechssl.errors import ConfigError
from speechssl.lock import locked
from speechssl.registry import Registry

# name -> scan(root, options, out) -> (manifests, meta, extra); each reader module under
# speechssl/data/corpora/ registers its own (``@READERS.register("librispeech")``)
READERS = Registry("corpus", packages=("speechssl.data.corpora",))

# keys the meta.json of a scanned corpus holds (speechssl.data.corpora.common.write_cache)
META_KEYS = ("name", "root", "format_version", "subsets", "counts", "sources")


def corpus_root(cfg) -> Path:
    """The absolute ``corpus.root`` directory; ConfigError if unset or not a directory."""
    if OmegaConf.is_missing(cfg, "root") or not cfg.get("root"):
        raise ConfigError(f"corpus.root is not set: point it at your copy of {cfg.name}, "
                          f"e.g. corpus={cfg.name} corpus.root=/data/{cfg.name} (docs/corpora.md)")
    root = Path(os.path.expanduser(str(cfg.root))).resolve()
    if not root.is_dir():
        raise ConfigError(f"corpus.root={cfg.root!r}: directory not found ({root})")
    return root


def load_real_corpus(cfg, data_dir: str | os.PathLike, progress: bool = True) -> Corpus:
    """Scan ``cfg.root`` into ``<data_dir>/corpora/<name>-<hash>`` and return the Corpus.

    A cache with a ``meta.json`` is reused while the source files it records are unchanged;
    a changed source, or ``corpus.rescan=true``, scans again (one process at a time; under
    torchrun rank 0, which runs first). A damaged ``meta.json`` is a ManifestError saying
    to rescan.
    """
    name = str(cfg.name)
    if name not in READERS:
        raise ConfigError(f"unknown corpus {name!r}; available: synth, "
                          f"{', '.join(READERS.names())}")
    root = corpus_root(cfg)
    opts = corpus_options(cfg)
    out = cache_dir(data_dir, name, root, opts)
    meta_file = out / "meta.json"
    with locked(out, f"[corpus] {out} is being scanned by another process: waiting"):
        why, say = None, progress
        if cfg.get("rescan") and dist.is_main():  # the other ranks read rank 0's new scan
            why = "corpus.rescan=true"
        elif not meta_file.is_file():
            why = "first use"
        else:
            meta = read_meta(meta_file, META_KEYS, f"run again with corpus.rescan=true to "
                             f"scan {root} again")
            changed = changed_source(meta)
            if changed:  # said even without progress: the manifests are about to change
                why, say = f"{changed} since the last scan", True
        if why is not None:
            if say:
                print(f"[corpus] scanning {name} at {root} -> {out} ({why})", flush=True)
            meta_file.unlink(missing_ok=True)  # the completion mark: a failed scan leaves none
            with recording_sources() as sources:
                manifests, meta, extra = READERS.get(name)(root, OmegaConf.create(opts), out)
            meta = write_cache(out, name, root, manifests, meta, extra, sources)
    return Corpus(name=name, root=out, meta=meta, options=opts)
