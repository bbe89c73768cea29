"""Self-supervised pre-training (the upstream supplies its loss), and where an
upstream's weights come from: a checkpoint file, an earlier run, or a new run. Runs on
one process or under torchrun with DistributedDataParallel (docs/distributed.md)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from speechssl import distributed as dist
from speechssl.atomic import atomic_write_text
from speechssl.checkpoint import (
    load_training_state,
    load_weights,
    read_metadata,
    save_training_state,
    save_weights,
    state_hash,
)
from speechssl.data.batching import AudioDataset, LengthBucketSampler, collate_audio
from speechssl.data.corpus import Corpus
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.runtime import autocast, config_hash, precision_of
from speechssl.upstream.base import Upstream, build_upstream

RESERVED = ("name", "ckpt", "pretrain")  # upstream config keys that are not model options


def upstream_options(cfg_up: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg_up, resolve=True).items()
            if k not in RESERVED}


def build_from_config(cfg_up: DictConfig) -> Upstream:
    return build_upstream(cfg_up.name, **upstream_options(cfg_up))


def count_params(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# pre-training options that do not change the weights (``steps``: a longer budget continues
# the same run, from its last checkpoint)
NOT_A_RECIPE = ("steps", "log_every", "save_every")


def pretrain_recipe(cfg_up: DictConfig) -> dict:
    """The pre-training options that change the weights reached at a given step."""
    pc = OmegaConf.to_container(cfg_up.get("pretrain") or {}, resolve=True)
    return {k: v for k, v in pc.items() if k not in NOT_A_RECIPE}


def pretrain_dir(cfg: DictConfig, corpus: Corpus) -> Path:
    """One directory per (upstream, corpus, architecture, pre-training recipe): another lr or
    batch size is another run, a longer budget continues the same one. A run made before the
    recipe was part of the name (the directory named by the architecture alone) is still
    found when its saved recipe is the one asked for."""
    root = Path(cfg.out_dir) / "pretrain" / cfg.upstream.name / corpus.name
    arch = {"name": cfg.upstream.name, **upstream_options(cfg.upstream)}
    recipe = pretrain_recipe(cfg.upstream)
    legacy = root / config_hash(arch)
    if (legacy / "config.yaml").is_file() and \
            pretrain_recipe(OmegaConf.load(legacy / "config.yaml")) == recipe:
        return legacy
    return root / config_hash({**arch, "pretrain": recipe})


def check_not_longer(run: Path, done: int, steps: int) -> None:
    """A run already past the asked budget is never used silently as a shorter one."""
    if done > steps:
        raise ConfigError(f"{run} is pre-trained for {done} steps, more than "
                          f"upstream.pretrain.steps={steps}: set upstream.pretrain.steps={done}, "
                          f"or upstream.ckpt={run / 'model.safetensors'}, or another out_dir "
                          "for a shorter run")


def lr_at(step: int, pc: DictConfig) -> float:
    """Linear warm-up, then constant, linear or cosine decay to zero at ``pc.steps``."""
    if step < pc.warmup_steps:
        return pc.lr * (step + 1) / pc.warmup_steps
    frac = (step - pc.warmup_steps) / max(1, pc.steps - pc.warmup_steps)
    if pc.decay == "constant":
        return pc.lr
    if pc.decay == "linear":
        return pc.lr * max(0.0, 1.0 - frac)
    if pc.decay == "cosine":
        return pc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
    raise ConfigError(f"upstream.pretrain.decay={pc.decay!r}; valid: constant, linear, cosine")


def pretrain_data(model: Upstream, corpus: Corpus, split: str, pc: DictConfig):
    """(dataset, per-item sizes, batch budget, collate) of the pre-training ``split``. Audio:
    the ``pretrain`` subset, sizes in seconds, ``pc.batch_seconds``; text upstreams: their
    ``text-pretrain`` subset, sizes in (estimated) tokens, ``pc.batch_tokens``."""
    if model.modality == "text":
        from speechssl.text.data import TextDataset, approx_tokens, collate_text, text_items

        items = text_items(corpus, model.pretrain_subset, split)
        return (TextDataset(items, model.encode_ids), [approx_tokens(it) for it in items],
                pc.batch_tokens, collate_text)
    items = corpus.items("pretrain", split)
    return AudioDataset(items), [it["duration"] for it in items], pc.batch_seconds, collate_audio


def batch_inputs(batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, lengths) of a batch on ``device``: waveforms (B, S) or token ids (B, T)."""
    x = batch["tokens"] if "tokens" in batch else batch["audio"]
    return x.to(device), batch["lengths"].to(device)


class PretrainLoss(torch.nn.Module):
    """``forward`` is the upstream's ``pretrain_loss``: DistributedDataParallel syncs the
    gradients of what runs through a wrapped module's forward, so this is what it wraps."""

    def __init__(self, upstream: Upstream):
        super().__init__()
        self.upstream = upstream

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict:
        return self.upstream.pretrain_loss(x, lengths)


def reduce_logs(out: dict, weight: float) -> dict[str, float]:
    """Global-batch values of a rank's loss dict: sum over ranks of weight x value (one
    all-reduce; the value itself in a single-process run)."""
    keys = sorted(k for k, v in out.items() if torch.as_tensor(v).numel() == 1)
    local = torch.stack([torch.as_tensor(out[k]).detach().float().cpu().reshape(()) * weight
                         for k in keys])
    if dist.is_initialized() and dist.world().world_size > 1:
        device = out["loss"].device if out["loss"].device.type == "cuda" else "cpu"
        local = dist.all_reduce_sum(local.to(device)).cpu()
    return dict(zip(keys, local.tolist(), strict=True))


@torch.no_grad()
def dev_metrics(model: Upstream, corpus: Corpus, device, pc: DictConfig) -> dict[str, float]:
    """Every scalar the pretext loss reports (loss, accuracy, perplexity, ...) on the dev
    split, each averaged over items."""
    model.eval()
    dataset, sizes, budget, collate = pretrain_data(model, corpus, "dev", pc)
    sampler = LengthBucketSampler(sizes, budget, shuffle=False)
    totals: dict[str, float] = {}
    n = 0
    for batch in DataLoader(dataset, batch_sampler=sampler, collate_fn=collate):
        out = model.pretrain_loss(*batch_inputs(batch, device))
        for key, value in out.items():
            if torch.is_tensor(value) and value.numel() == 1:
                totals[key] = totals.get(key, 0.0) + float(value) * len(batch["items"])
        n += len(batch["items"])
    model.train()
    return {key: total / max(n, 1) for key, total in totals.items()}


def pretrain(cfg: DictConfig, corpus: Corpus, device: torch.device) -> Path:
    """Pre-train ``cfg.upstream`` on the corpus's ``pretrain`` split; resumes from the last
    checkpoint of an interrupted run. Returns the final safetensors file.

    Under torchrun every rank runs this; each global batch is split across the ranks
    (:func:`speechssl.distributed.shard_batch`, weighted by audio seconds or tokens) and
    rank 0 alone writes checkpoints, logs and the final weights."""
    pc = cfg.upstream.pretrain
    info = dist.world()
    main = info.rank == 0
    device = dist.local_device(device)
    run = pretrain_dir(cfg, corpus)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg.upstream).to(device)
    if not model.can_pretrain:
        raise ConfigError(f"upstream {cfg.upstream.name!r} has nothing to pre-train")
    dataset, sizes, budget, collate = pretrain_data(model, corpus, "train", pc)
    sampler = LengthBucketSampler(sizes, budget,
                                  shuffle=True, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=pc.lr, weight_decay=pc.weight_decay)
    state = load_training_state(run / "last", model, opt) or {"step": 0, "epoch": 0, "pos": 0,
                                                               "seconds": 0.0}
    check_not_longer(run, state["step"], pc.steps)
    if state["step"] and main:
        print(f"[pretrain] resuming {run} from step {state['step']}")
    if main:
        (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg.upstream, resolve=True))
    with dist.main_first():  # rank 0 fits (e.g. HuBERT's k-means) and caches; others load
        model.prepare(corpus, run, device)
    dist.seed_rank(cfg.seed, state["step"])
    step_model = dist.wrap_ddp(PretrainLoss(model))
    writer = SummaryWriter(str(run / "tb"), purge_step=state["step"]) if main else None
    model.train()
    start = time.time() - state["seconds"]
    bar = tqdm(total=pc.steps, initial=state["step"], desc=f"pretrain {cfg.upstream.name}",
               disable=not (cfg.progress and main))
    last_loss = float("nan")
    while state["step"] < pc.steps:
        sampler.set_epoch(state["epoch"])
        # global batches (the single-process ones); this rank loads its share of each
        shares = [dist.shard_batch(b, sizes, info.rank, info.world_size)
                  for b in list(sampler)[state["pos"]:]]
        # its own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run would see other dropout masks than an uninterrupted one
        loader = DataLoader(dataset, batch_sampler=[idx for idx, _ in shares],
                            collate_fn=collate, num_workers=cfg.num_workers,
                            generator=torch.Generator())
        for batch, (_, weight) in zip(loader, shares, strict=True):
            lr = lr_at(state["step"], pc)
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast(device, precision_of(cfg)):
                out = step_model(*batch_inputs(batch, device))
            opt.zero_grad(set_to_none=True)
            if info.world_size == 1:
                out["loss"].backward()
            else:  # DDP averages over ranks: R x weight_r makes it the global batch's loss
                (out["loss"] * (info.world_size * weight)).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), pc.grad_clip)
            opt.step()
            state["step"] += 1
            model.after_step(state["step"])  # e.g. data2vec's EMA teacher update
            state["pos"] += 1
            logging = state["step"] % pc.log_every == 0
            if info.world_size == 1:
                last_loss = out["loss"].item()
                logs = {k: float(v.detach()) for k, v in out.items()} if logging else {}
            else:  # the same on every rank: one all-reduce per step
                logs = reduce_logs(out if logging else {"loss": out["loss"]}, weight)
                last_loss = logs["loss"]
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            if logging and writer is not None:
                for k, v in logs.items():
                    writer.add_scalar(f"pretrain/{k}", v, state["step"])
                writer.add_scalar("pretrain/lr", lr, state["step"])
                writer.add_scalar("pretrain/grad_norm", float(grad_norm), state["step"])
            if main and (state["step"] % pc.save_every == 0 or state["step"] >= pc.steps):
                state["seconds"] = time.time() - start
                save_training_state(run / "last", model, opt, state)
            if state["step"] >= pc.steps:
                break
        else:
            state["epoch"], state["pos"] = state["epoch"] + 1, 0
    bar.close()
    final = run / "model.safetensors"
    if not main:  # rank 0 scores dev and writes the weights; the others wait for them
        dist.barrier()
        return final
    dev = dev_metrics(model, corpus, device, pc)
    loss_dev = dev["loss"]
    for key, value in dev.items():
        writer.add_scalar(f"pretrain/dev_{key}", value, state["step"])
    writer.close()
    meta = {"upstream": cfg.upstream.name, "options": json.dumps(upstream_options(cfg.upstream)),
            "corpus": corpus.name, "steps": str(state["step"])}
    save_weights(final, model, meta)
    summary = {"upstream": cfg.upstream.name, "corpus": corpus.name, "steps": state["step"],
               "train_loss": last_loss, "dev_loss": loss_dev, "dev": dev,
               "params": count_params(model, trainable_only=True),
               "wall_time_s": round(time.time() - start, 1), "weights": str(final)}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1))
    accuracies = "".join(f"dev {k} {v:.4f}, " for k, v in dev.items() if "accuracy" in k)
    print(f"[pretrain] {cfg.upstream.name} on {corpus.name}: {state['step']} steps, "
          f"train loss {last_loss:.4f}, dev loss {loss_dev:.4f}, {accuracies}"
          f"{summary['params'] / 1e6:.2f} M params, {summary['wall_time_s']:.0f} s -> {final}")
    dist.barrier()
    return final


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
    opts = upstream_options(cfg.upstream)
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
        weights_hash = model.weights_hash() or config_hash({"name": cfg.upstream.name, **opts}, n=12)
    else:
        path = pretrain_dir(cfg, corpus) / "model.safetensors"
        if not path.is_file():
            print(f"[upstream] no pre-trained {cfg.upstream.name} for corpus {corpus.name} yet: "
                  f"pre-training it now with the recipe's budget "
                  f"({cfg.upstream.pretrain.steps} steps)")
            path = pretrain(cfg, corpus, device)
        else:
            done = int(read_metadata(path).get("steps", cfg.upstream.pretrain.steps))
            if done < cfg.upstream.pretrain.steps:
                print(f"[upstream] the pre-trained {cfg.upstream.name} has {done} steps, the "
                      f"recipe asks for {cfg.upstream.pretrain.steps}: pre-training it on")
                path = pretrain(cfg, corpus, device)
            check_not_longer(path.parent, done, cfg.upstream.pretrain.steps)
            print(f"[upstream] using pre-trained {cfg.upstream.name}: {path}")
        meta = load_weights(path, model)
        source, weights_hash = str(path), state_hash(model)
        pretrain_corpus = meta.get("corpus", corpus.name)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, UpstreamInfo(weights_hash, source, pretrain_corpus, count_params(model))
