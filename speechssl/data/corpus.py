"""A corpus on disk: a root directory with manifests/<subset>/<split>.jsonl and meta.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from speechssl.data.manifest import read_manifest
from speechssl.errors import ConfigError

CORPORA = ("synth",)


@dataclass
class Corpus:
    name: str
    root: Path
    meta: dict = field(default_factory=dict)

    def manifest_path(self, subset: str, split: str) -> Path:
        return self.root / "manifests" / subset / f"{split}.jsonl"

    def items(self, subset: str, split: str) -> list[dict]:
        """The manifest's items with absolute ``path``; errors name the manifest line."""
        return read_manifest(self.manifest_path(subset, split), root=self.root)


def load_corpus(cfg, data_dir: str | Path, progress: bool = True) -> Corpus:
    """Resolve ``corpus=`` config to a Corpus, synthesizing the embedded one if needed."""
    if cfg.name == "synth":
        from speechssl.data.synth import ensure_corpus

        root = Path(cfg.root) if cfg.get("root") else Path(data_dir) / "synth"
        path = ensure_corpus(root, size=cfg.size, seed=int(cfg.seed),
                             num_workers=cfg.get("num_workers"), progress=progress)
        return Corpus(name=path.name, root=path, meta=json.loads((path / "meta.json").read_text()))
    raise ConfigError(f"unknown corpus {cfg.name!r}; available: {', '.join(CORPORA)}")
