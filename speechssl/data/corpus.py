"""A corpus on disk: a root directory with manifests/<subset>/<split>.jsonl and meta.json.

``corpus=synth`` is synthesized on first use; the real corpora (speechssl.data.corpora)
are scanned once from their published layouts into the same manifest form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechssl.data.manifest import read_manifest
from speechssl.errors import ConfigError


@dataclass
class Corpus:
    name: str
    root: Path
    meta: dict = field(default_factory=dict)

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
        return Corpus(name=path.name, root=path, meta=json.loads((path / "meta.json").read_text()))
    from speechssl.data.corpora import load_real_corpus

    return load_real_corpus(cfg, data_dir, progress=progress)  # a registered reader, or an error
