"""Where an upstream comes from: built from its config (name + options), loaded from a
checkpoint file, or taken from its pre-training run on the corpus (pre-trained first when
there is none), then frozen; and the identity of those pre-training runs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from speechssl import distributed as dist
from speechssl.checkpoint import load_weights, read_metadata, state_hash
from speechssl.data.corpus import Corpus
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.runtime import config_hash
from speechssl.upstream.base import Upstream, build_upstream, upstream_class

RESERVED = ("name", "ckpt", "pretrain")  # upstream config keys that are not model options

# pre-training options that do not change the weights (``steps``: a longer budget continues
# the same run, from its last checkpoint)
NOT_A_RECIPE = ("steps", "log_every", "save_every", "dev_every", "curve_items")
# ``<option>_from`` (a checkpoint option's source run, :func:`resolve_checkpoints`) is not a
# recipe either: the run key holds the content of the file it resolves to


def upstream_options(cfg_up: DictConfig) -> dict:
    """The constructor options of ``cfg.upstream`` (everything but name, ckpt, pretrain)."""
    return {k: v for k, v in OmegaConf.to_container(cfg_up, resolve=True).items()
            if k not in RESERVED}


def build_from_config(cfg_up: DictConfig) -> Upstream:
    """A freshly initialised upstream of ``cfg.upstream``'s class and options."""
    return build_upstream(cfg_up.name, **upstream_options(cfg_up))


def count_params(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def pretrain_recipe(cfg_up: DictConfig) -> dict:
    """The pre-training options that change the weights reached at a given step."""
    pc = OmegaConf.to_container(cfg_up.get("pretrain") or {}, resolve=True)
    return {k: v for k, v in pc.items() if k not in NOT_A_RECIPE and not k.endswith("_from")}


def pretrain_dir(cfg: DictConfig, corpus: Corpus) -> Path:
    """One directory per (upstream, corpus, architecture, pre-training recipe): another lr or
    batch size is another run, a longer budget continues the same one. The corpus part is
    its key (:attr:`Corpus.key`: name, options and manifests): another copy of a corpus, or
    a rescan that changed it, is another run."""
    arch = {"name": cfg.upstream.name, **upstream_options(cfg.upstream),
            **checkpoint_digests(cfg.upstream)}
    return (Path(cfg.out_dir) / "pretrain" / cfg.upstream.name / corpus.key
            / config_hash({**arch, "pretrain": pretrain_recipe(cfg.upstream)}))


def checkpoint_digests(cfg_up: DictConfig) -> dict:
    """{option: file_digest} for the set ``checkpoint_options`` of the upstream (a teacher, a
    unit model): they key its pre-training run and its weights hash (so its cells and
    feature caches) by the files' content, not their paths."""
    keys = getattr(upstream_class(cfg_up.name), "checkpoint_options", ())
    return {k: file_digest(cfg_up[k], f"upstream.{k}") for k in keys if cfg_up.get(k)}


def resolve_checkpoints(cfg: DictConfig, corpus: Corpus, device: torch.device) -> None:
    """Fill an unset checkpoint option (a teacher, a unit model) whose recipe says where it
    comes from: ``upstream.pretrain.<option>_from``, the overrides of another upstream's run
    (distilhubert: ``teacher_from: [upstream=hubert]``). That run on this corpus, in this
    out_dir, pre-trained first when it is missing, gives the file; so ``python run.py
    upstream=distilhubert downstream=pr`` pre-trains the hubert teacher, then the student."""
    from speechssl.config import compose_config

    for key in getattr(upstream_class(cfg.upstream.name), "checkpoint_options", ()):
        source = (cfg.upstream.get("pretrain") or {}).get(f"{key}_from")
        if cfg.upstream.get(key) or not source:
            continue
        overrides = [str(o) for o in source]
        try:
            other = compose_config(overrides)
        except ConfigError as e:
            raise ConfigError(f"upstream.pretrain.{key}_from={overrides}: {e}") from None
        sub = cfg.copy()
        with open_dict(sub):
            sub.upstream = other.upstream
        print(f"[upstream] {cfg.upstream.name}: upstream.{key} from the run of "
              f"{' '.join(overrides)}")
        path = pretrained_weights(sub, corpus, device)
        with open_dict(cfg.upstream):
            cfg.upstream[key] = str(path)


def file_digest(path: str | Path, what: str) -> str:
    """``sha256:<hex>`` of a file's bytes (``what`` names it in the error when it is
    missing). A checkpoint another upstream reads keys that upstream's pre-training run by
    this, not by its path: a teacher pre-trained on in place (a longer budget continues the
    same file) or a file replaced under the same name gives another run, a moved one the same."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}={str(path)!r}: checkpoint file not found")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def check_not_longer(run: Path, done: int, steps: int) -> None:
    """A run already past the asked budget is never used silently as a shorter one."""
    if done > steps:
        raise ConfigError(f"{run} is pre-trained for {done} steps, more than "
                          f"upstream.pretrain.steps={steps}: set upstream.pretrain.steps={done}, "
                          f"or upstream.ckpt={run / 'model.safetensors'}, or another out_dir "
                          "for a shorter run")


@dataclass
class UpstreamInfo:
    weights_hash: str
    source: str  # "none" (no weights), a checkpoint path
    pretrain_corpus: str
    params: int

    def tag(self, name: str) -> str:
        return f"{name}-{self.weights_hash[:8]}"


def load_upstream(cfg: DictConfig, corpus: Corpus,
                  device: torch.device) -> tuple[Upstream, UpstreamInfo]:
    """The frozen upstream for a downstream cell: ``upstream.ckpt`` if given, else the
    pre-training run of this upstream on this corpus, else a new one (said out loud)."""
    model = build_from_config(cfg.upstream)
    pretrain_corpus = ""
    if cfg.upstream.get("ckpt"):
        path = Path(cfg.upstream.ckpt)
        meta = load_weights(path, model)
        if meta.get("upstream") not in (None, cfg.upstream.name):
            raise SpeechSSLError(f"{path}: checkpoint of upstream {meta['upstream']!r}, "
                                 f"not {cfg.upstream.name!r}")
        source, weights_hash = str(path), state_hash(model)
        pretrain_corpus = meta.get("corpus", "")
    elif not model.can_pretrain:
        source = "none"
        weights_hash = model.weights_hash() or config_hash(
            {"name": cfg.upstream.name, **upstream_options(cfg.upstream)}, n=12)
    else:
        path = pretrained_weights(cfg, corpus, device)
        meta = load_weights(path, model)
        source, weights_hash = str(path), state_hash(model)
        pretrain_corpus = meta.get("corpus", corpus.name)
    files = checkpoint_digests(cfg.upstream)
    if files:  # discrete_bert's features are its weights *and* its unit model's
        weights_hash = config_hash({"weights": weights_hash, **files}, n=12)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, UpstreamInfo(weights_hash, source, pretrain_corpus, count_params(model))


def steps_done(path: Path, default: int) -> int | None:
    """The steps of the finished weights ``path`` (its metadata; ``default`` when it has
    none), or None when there are none yet."""
    return int(read_metadata(path).get("steps", default)) if path.is_file() else None


def pretrained_weights(cfg: DictConfig, corpus: Corpus, device: torch.device) -> Path:
    """The weights of this upstream's pre-training run on ``corpus`` at the recipe's
    budget: the finished run, or the run pre-trained (on) now. Two processes that need the
    same run (two seeds of a cell at once) do not both train it: :func:`pretrain` holds the
    run's lock, and the second one finds the run finished and reuses it."""
    from speechssl.pretrain import pretrain

    resolve_checkpoints(cfg, corpus, device)
    steps = cfg.upstream.pretrain.steps
    path = pretrain_dir(cfg, corpus) / "model.safetensors"
    done = dist.broadcast_object(steps_done(path, steps) if dist.is_main() else None)
    if done is None:
        print(f"[upstream] no pre-trained {cfg.upstream.name} for corpus {corpus.name} yet: "
              f"pre-training it now with the recipe's budget ({steps} steps)")
        path = pretrain(cfg, corpus, device)
    elif done < steps:
        print(f"[upstream] the pre-trained {cfg.upstream.name} has {done} steps, the "
              f"recipe asks for {steps}: pre-training it on")
        path = pretrain(cfg, corpus, device)
    else:
        check_not_longer(path.parent, done, steps)
    print(f"[upstream] using pre-trained {cfg.upstream.name}: {path}")
    return path


def frozen_from_checkpoint(path: str, key: str, device, kinds: tuple[str, ...] = ()) -> Upstream:
    """The upstream a pre-training checkpoint holds (its ``upstream`` name and ``options`` from
    the metadata), weights loaded, frozen, in eval mode: the teachers and unit models other
    upstreams read. ``key`` names the option in errors; ``kinds``: the upstream names
    accepted (any when empty)."""
    import json

    if not path or not Path(path).is_file():
        raise ConfigError(f"upstream.{key}={path!r}: checkpoint file not found")
    meta = read_metadata(path)
    name = meta.get("upstream")
    if name is None or (kinds and name not in kinds):
        raise ConfigError(f"upstream.{key}={path!r} is a {name!r} checkpoint; expected "
                          f"{', '.join(kinds) or 'a pre-training checkpoint'}")
    model = build_upstream(name, **json.loads(meta.get("options", "{}")))
    load_weights(path, model)
    return model.eval().requires_grad_(False).to(device)
