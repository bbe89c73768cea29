"""A corpus on disk: a root directory with manifests/<subset>/<split>.jsonl and meta.json.

``corpus=synth`` is synthesized on first use; the real corpora (speechssl.data.corpora)
are scanned once from their published layouts into the same manifest form.

What a corpus *is* (:attr:`Corpus.identity`: its name, its options and a SHA-256 of its
manifest files) keys everything computed from it: a cell's run directory, its feature
caches and its pre-training run (:attr:`Corpus.key`), so another copy, another test set or
a rescan that changed the manifests is another corpus, never "already done".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from omegaconf import OmegaConf

from speechssl.data.manifest import read_manifest
from speechssl.errors import ConfigError, ManifestError

# corpus config keys that choose where or how to read it, not what it is
NOT_OPTIONS = ("name", "root", "rescan", "num_workers")

# keys a corpus's meta.json must hold (written by the synthesizer / the real-corpus scan)
SYNTH_META_KEYS = ("format_version", "size", "seed", "counts", "hours")


def corpus_options(cfg) -> dict:
    """The options of a ``corpus=`` config that say what is read (everything but
    name/root/rescan/num_workers), as plain data."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return {k: v for k, v in plain.items() if k not in NOT_OPTIONS}


def read_meta(path: Path, required: Sequence[str], remedy: str) -> dict:
    """A corpus's ``meta.json``; a damaged one (unreadable, not JSON, not an object, keys
    missing) is a ManifestError naming the file, what is wrong and ``remedy``."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        problem = f"unreadable: {getattr(e, 'strerror', None) or type(e).__name__}"
    except json.JSONDecodeError as e:
        problem = f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    else:
        missing = [k for k in required if k not in meta] if isinstance(meta, dict) else None
        if missing == []:
            return meta
        problem = (f"missing key(s) {', '.join(missing)}" if missing
                   else f"a JSON {type(meta).__name__}, not an object")
    raise ManifestError(f"{path}: damaged corpus metadata ({problem}); {remedy}")


@dataclass
class Corpus:
    """``name``: the readable name (leaderboard rows); ``root``: the directory holding
    manifests/ and meta.json; ``options``: what the corpus config says is read
    (:func:`corpus_options`)."""

    name: str
    root: Path
    meta: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 over every file under ``manifests/`` (relative path, size, bytes), in
        path order: any change to any manifest is another fingerprint."""
        h = hashlib.sha256()
        base = Path(self.root) / "manifests"
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            data = path.read_bytes()
            h.update(f"{path.relative_to(base).as_posix()}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()

    @property
    def identity(self) -> dict:
        """What the corpus is: name, options and the fingerprint of its manifests."""
        return {"name": self.name, "options": self.options, "manifests": self.fingerprint}

    @property
    def key(self) -> str:
        """``<name>-<8 hex of the identity>``: the corpus's part of run directories,
        feature caches and pre-training runs."""
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str)
                                .encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"

    def manifest_path(self, subset: str, split: str) -> Path:
        return self.root / "manifests" / subset / f"{split}.jsonl"

    def items(self, subset: str, split: str, fields: Sequence[str] = ()) -> list[dict]:
        """The manifest's items with absolute ``path``; errors name the manifest line.

        ``fields``: label fields the caller needs; a corpus whose items lack one raises
        ConfigError saying what to set (e.g. ``corpus.lexicon`` for LibriSpeech phonemes).
        """
        self._check_subset(subset)
        items = read_manifest(self.manifest_path(subset, split), root=self.root)
        for name in fields:
            if items and name not in items[0]:
                hint = self.meta.get("hints", {}).get(name, "")
                raise ConfigError(f"corpus {self.name!r} subset {subset!r} has no {name!r} field"
                                  + (f": {hint}" if hint else ""))
        return items

    def _check_subset(self, subset: str) -> None:
        """ConfigError naming the subsets this corpus provides when ``subset`` is not one."""
        provided = self.meta.get("subsets")
        if provided is not None and subset not in provided:
            raise ConfigError(f"corpus {self.name!r} has no {subset!r} subset (it provides "
                              f"{', '.join(provided)}); choose a corpus for this task in "
                              f"docs/corpora.md")


def load_corpus(cfg, data_dir: str | Path, progress: bool = True) -> Corpus:
    """Resolve ``corpus=`` config to a Corpus, synthesizing the embedded one if needed."""
    if cfg.name == "synth":
        from speechssl.data.synth import ensure_corpus

        root = Path(cfg.root) if cfg.get("root") else Path(data_dir) / "synth"
        path = ensure_corpus(root, size=cfg.size, seed=int(cfg.seed),
                             num_workers=cfg.get("num_workers"), progress=progress)
        meta = read_meta(path / "meta.json", SYNTH_META_KEYS,
                         f"delete {path} to synthesize it again")
        return Corpus(name=path.name, root=path, meta=meta, options=corpus_options(cfg))
    from speechssl.data.corpora import load_real_corpus

    return load_real_corpus(cfg, data_dir, progress=progress)  # a registered reader, or an error
