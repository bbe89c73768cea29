"""Export an upstream: ``format=speechssl`` (default) writes safetensors plus a yaml config
(safetensors format, HuggingFace 2022), so that ``upstream=NAME upstream.ckpt=<file>`` reloads
exactly the same weights; ``format=hf`` writes wav2vec2, hubert and data2vec as a
transformers ``save_pretrained`` directory (speechssl/hf_export.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from speechssl.checkpoint import load_weights, read_metadata, save_weights
from speechssl.errors import SpeechSSLError
from speechssl.upstream.base import Upstream, build_upstream

FORMATS = ("speechssl", "hf")


def export_format(cfg: DictConfig) -> str:
    return str(cfg.get("format") or "speechssl")


def export_path(cfg: DictConfig, weights_hash: str) -> Path:
    """``export_path`` if set (``+export_path=...``), else
    ``<out_dir>/export/<upstream>-<weights hash>.safetensors``; with ``format=hf`` a
    directory, ``<out_dir>/export/<upstream>-<weights hash>-hf``."""
    given = cfg.get("export_path")
    hf = export_format(cfg) == "hf"
    if given:
        path = Path(str(given))
        if hf or path.suffix == ".safetensors":
            return path
        return path.with_suffix(".safetensors")
    safe = re.sub(r"[^\w.-]+", "_", str(cfg.upstream.name))
    name = f"{safe}-{weights_hash[:8]}"
    return Path(cfg.out_dir) / "export" / (f"{name}-hf" if hf else f"{name}.safetensors")


def check_export(cfg: DictConfig) -> None:
    """``mode=export format=hf``: an upstream it converts, with transformers installed
    (config validation: no model is built; the format's values: speechssl/schema.py)."""
    from speechssl.errors import ConfigError

    if export_format(cfg) == "hf" and cfg.get("mode") == "export":
        from speechssl.hf_export import UPSTREAM_TYPES

        if cfg.upstream.name not in UPSTREAM_TYPES:
            raise ConfigError(f"format=hf exports upstream={', '.join(UPSTREAM_TYPES)} (the "
                              f"wav2vec 2.0 backbone); upstream {cfg.upstream.name!r} has no "
                              f"transformers form here: use format=speechssl "
                              f"(docs/plug-in.md#export-to-huggingface)")
        from speechssl.upstream.hf import require_transformers

        require_transformers("format=hf")


def save_upstream(path: str | Path, model: Upstream, name: str, options: dict,
                  extra: dict[str, str] | None = None, upstream_cfg: dict | None = None) -> Path:
    """Weights to ``path`` (metadata: upstream name, options as JSON, ``extra``), and the
    upstream config that reloads them to ``path`` with ``.yaml`` (``ckpt`` pointing back)."""
    path = Path(path)
    meta = {"upstream": name, "options": json.dumps(options, sort_keys=True), **(extra or {})}
    save_weights(path, model, meta)
    config = {"name": name, **(upstream_cfg or options), "ckpt": str(path.resolve())}
    path.with_suffix(".yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    return path


def load_exported(path: str | Path) -> Upstream:
    """An exported upstream, rebuilt from the file's own metadata (no config needed)."""
    path = Path(path)
    meta = read_metadata(path)
    if "upstream" not in meta or "options" not in meta:
        raise SpeechSSLError(f"{path}: no 'upstream'/'options' metadata; not an exported upstream")
    model = build_upstream(meta["upstream"], **json.loads(meta["options"]))
    load_weights(path, model)
    return model.eval()


def export_upstream(cfg: DictConfig) -> Path:
    """``mode=export``: the weights a downstream cell would use for ``cfg.upstream``
    (its checkpoint, pre-training run, or a new pre-training run) written as above."""
    from speechssl.data.corpus import load_corpus
    from speechssl.upstream.load import load_upstream, upstream_options

    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
    model, info = load_upstream(cfg, corpus, torch.device("cpu"))
    path = export_path(cfg, info.weights_hash)
    extra = {"source": info.source, "weights_hash": info.weights_hash}
    if info.pretrain_corpus:
        extra["corpus"] = info.pretrain_corpus
    if export_format(cfg) == "hf":
        return export_hf(cfg, model, path, extra)
    up_cfg = OmegaConf.to_container(cfg.upstream, resolve=True)
    up_cfg.pop("name", None)
    save_upstream(path, model, str(cfg.upstream.name), upstream_options(cfg.upstream),
                  extra=extra, upstream_cfg=up_cfg)
    source = info.source if info.source != "none" else "weights from its options"
    print(f"[export] {cfg.upstream.name} ({source}, weights hash {info.weights_hash}) -> {path}")
    print(f"[export] reload: upstream={cfg.upstream.name} upstream.ckpt={path} (with the same "
          f"upstream options: {path.with_suffix('.yaml')})")
    return path


def export_hf(cfg: DictConfig, model: Upstream, path: Path, extra: dict[str, str]) -> Path:
    """``format=hf``: the upstream as a transformers save_pretrained directory."""
    from speechssl.hf_export import CLASSES, save_hf
    from speechssl.upstream.load import upstream_options

    name = str(cfg.upstream.name)
    provenance = {**extra, "options": upstream_options(cfg.upstream)}
    out, conv = save_hf(model, name, path, provenance)
    print(f"[export] {name} (weights hash {extra['weights_hash']}) -> {out} "
          f"(transformers {CLASSES[conv.model_type][1]})")
    for note in conv.notes:
        print(f"[export] note: {note}")
    print(f"[export] load: transformers.AutoModel.from_pretrained('{out}'), or "
          f"upstream=hf upstream.path={out}")
    return out
