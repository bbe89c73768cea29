"""The downstream loop: frozen features -> featurizer + probe, model selection on dev,
one evaluation on test, one row in the leaderboard. Readable top to bottom. Under torchrun
the probe trains with DistributedDataParallel; rank 0 alone evaluates, checkpoints and
records (docs/distributed.md)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from downstream.base import Task, build_task
from speechssl import distributed as dist
from speechssl import leaderboard
from speechssl.atomic import atomic_write_text
from speechssl.cache import collate_features, split_features
from speechssl.checkpoint import (
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from speechssl.data.batching import LengthBucketSampler
from speechssl.data.corpus import Corpus, load_corpus
from speechssl.errors import SpeechSSLError
from speechssl.featurizer import Featurizer
from speechssl.pretrain import UpstreamInfo, count_params, load_upstream
from speechssl.runtime import code_version, config_hash, resolve_device
from speechssl.upstream.base import Upstream

TASK_RESERVED = ("name", "optim", "featurizer")


class ProbeModel(nn.Module):
    """What trains downstream: the layer weights and the task head."""

    def __init__(self, featurizer: Featurizer, head: nn.Module):
        super().__init__()
        self.featurizer, self.head = featurizer, head


class ProbeLoss(nn.Module):
    """``forward`` is the task's loss on a batch of features: DistributedDataParallel syncs
    the gradients of what runs through a wrapped module's forward, so this is what it wraps."""

    def __init__(self, model: ProbeModel, task: Task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor, batch: dict) -> torch.Tensor:
        """layers: (L, B, T, D); lengths: (B,) -> scalar loss."""
        return self.task.loss(self.model.head, self.model.featurizer(layers), lengths, batch)


def task_from_config(cfg_down: DictConfig) -> Task:
    opts = {k: v for k, v in OmegaConf.to_container(cfg_down, resolve=True).items()
            if k not in TASK_RESERVED}
    return build_task(cfg_down.name, **opts)


def better(a: float, b: float | None, higher_is_better: bool) -> bool:
    return b is None or (a > b if higher_is_better else a < b)


@torch.no_grad()
def predict_split(model: ProbeModel | None, task: Task, feats: list, items: list[dict], device,
                  batch_frames: int) -> list:
    """Per-item predictions of the probe, in item order (batches in length order, no
    shuffling). With no probe (``task.trainable`` False) the frozen features are the
    predictions."""
    if model is None:
        return feats
    model.eval()
    sampler = LengthBucketSampler([f.shape[1] for f in feats], batch_frames, shuffle=False)
    preds: list = [None] * len(items)
    for idx in sampler:
        layers, lengths = collate_features(feats, idx, device)
        batch = {"items": [items[i] for i in idx]}
        for i, p in zip(idx, task.predict(model.head, model.featurizer(layers), lengths, batch),
                        strict=True):
            preds[i] = p
    model.train()
    return preds


def evaluate(model: ProbeModel | None, task: Task, split: str, feats: list, items: list[dict],
             device, batch_frames: int, out_dir: Path | None = None) -> dict[str, float]:
    """Score the probe on one split; ``out_dir`` (final test pass) receives output files."""
    preds = predict_split(model, task, feats, items, device, batch_frames)
    return task.evaluate_split(split, preds, items, out_dir)


def run_dir_for(cfg: DictConfig, tag: str, task: str, corpus: str) -> Path:
    """One directory per (upstream weights, task, corpus, seed, probe config): a changed
    probe or optimizer setting is a new cell, never a resume of another one."""
    probe = config_hash(OmegaConf.to_container(cfg.downstream, resolve=True), n=8)
    return Path(cfg.out_dir) / "runs" / tag / task / corpus / f"seed{cfg.seed}-{probe}"


@dataclass
class Cell:
    """Everything one (upstream, task, corpus, seed, probe config) cell works on."""

    device: torch.device
    task: Task
    corpus: Corpus
    splits: dict[str, list[dict]]
    upstream: Upstream
    info: UpstreamInfo
    run_dir: Path


def prepare_cell(cfg: DictConfig) -> Cell:
    """Task and its splits, the corpus (synthesized if needed), the frozen upstream
    (pre-trained if needed), and the cell's run directory."""
    device = dist.local_device(resolve_device(cfg.device))
    task = task_from_config(cfg.downstream)
    with dist.main_first():  # rank 0 synthesizes the corpus if needed, the others read it
        corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
    splits = task.splits(corpus)
    task.setup(splits.get("train", []))  # QbE has no training split
    upstream, info = load_upstream(cfg, corpus, device)
    task.frame_shift = upstream.downsample_rate / upstream.sample_rate
    task.device = str(device)
    run_dir = run_dir_for(cfg, info.tag(cfg.upstream.name), task.name, corpus.name)
    return Cell(device, task, corpus, splits, upstream, info, run_dir)


def feature_key(cfg: DictConfig, cell: Cell, split: str) -> dict:
    """What a split's frozen features depend on: the upstream's weights and config, the
    corpus and the split (the cache key, speechssl/cache.py)."""
    return {"weights_hash": cell.info.weights_hash, "upstream": cfg.upstream.name,
            "upstream_config": OmegaConf.to_container(cfg.upstream, resolve=True),
            "corpus": cell.corpus.name, "split": split}


def train_probe(cfg: DictConfig, task: Task, feats: dict[str, list], splits: dict[str, list[dict]],
                device, run_dir: Path) -> ProbeModel:
    """Train featurizer + probe on the train split (resuming ``run_dir/last``), keeping the
    dev-best probe in ``run_dir/best.safetensors``; a task with no dev split (ASV) keeps
    the last probe, as s3prl does. Returns the model holding the kept weights.

    Under torchrun every rank trains on its share of each global batch (item-count
    weighted, :func:`speechssl.distributed.shard_batch`); rank 0 evaluates dev, keeps the
    best probe and writes checkpoints, then shares the early-stopping state."""
    oc = cfg.downstream.optim
    info = dist.world()
    main = info.rank == 0
    num_layers, _, dim = feats["train"][0].shape
    torch.manual_seed(cfg.seed)
    model = ProbeModel(Featurizer(num_layers, **cfg.downstream.featurizer),
                       task.build_probe(dim)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=oc.lr, weight_decay=oc.weight_decay)
    fresh = {"step": 0, "epoch": 0, "pos": 0, "best": None, "best_dev": None, "bad_evals": 0}
    state = load_training_state(run_dir / "last", model, opt) or fresh
    if state["step"] and main:
        print(f"[train] resuming {run_dir} from step {state['step']}")
    dist.seed_rank(cfg.seed, state["step"])
    step_model = dist.wrap_ddp(ProbeLoss(model, task))
    sampler = LengthBucketSampler([f.shape[1] for f in feats["train"]], oc.batch_frames,
                                  shuffle=True, seed=cfg.seed)
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["step"]) if main else None
    bar = tqdm(total=oc.max_steps, initial=state["step"], disable=not (cfg.progress and main),
               desc=f"{task.name} probe on {cfg.upstream.name}")
    train_items = splits["train"]
    model.train()
    while state["step"] < oc.max_steps and state["bad_evals"] < oc.patience:
        sampler.set_epoch(state["epoch"])
        for global_idx in list(sampler)[state["pos"]:]:
            idx, weight = dist.shard_batch(global_idx, None, info.rank, info.world_size)
            layers, lengths = collate_features(feats["train"], idx, device)
            batch = {"items": [train_items[i] for i in idx]}
            loss = step_model(layers, lengths, batch)
            opt.zero_grad(set_to_none=True)
            if info.world_size == 1:
                loss.backward()
            else:  # DDP averages over ranks: R x weight_r makes it the global batch's loss
                (loss * (info.world_size * weight)).backward()
                loss = dist.all_reduce_sum(loss * weight)
            nn.utils.clip_grad_norm_(model.parameters(), oc.grad_clip)
            opt.step()
            state["step"] += 1
            state["pos"] += 1
            bar.update(1)
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            if writer is not None:
                writer.add_scalar("train/loss", loss_value, state["step"])
            if state["step"] % oc.eval_every == 0 or state["step"] >= oc.max_steps:
                if not main:  # rank 0 evaluates and saves; take its early-stopping state
                    state = dist.broadcast_object(None)
                elif "dev" in feats:
                    dev = evaluate(model, task, "dev", feats["dev"], splits["dev"], device,
                                   oc.batch_frames)
                    for k, v in dev.items():
                        writer.add_scalar(f"dev/{k}", v, state["step"])
                    if better(dev[task.metric], state["best"], task.higher_is_better):
                        state.update(best=dev[task.metric], best_dev=dev, bad_evals=0)
                        save_weights(run_dir / "best.safetensors", model)
                    else:
                        state["bad_evals"] += 1
                    bar.write(f"step {state['step']}: dev {task.metric} {dev[task.metric]:.2f} "
                              f"(best {state['best']:.2f})")
                else:  # no dev split (ASV): the last probe is the one kept
                    save_weights(run_dir / "best.safetensors", model)
                if main:
                    save_training_state(run_dir / "last", model, opt, state)
                    dist.broadcast_object(state)
            if state["step"] >= oc.max_steps or state["bad_evals"] >= oc.patience:
                break
        else:
            state["epoch"], state["pos"] = state["epoch"] + 1, 0
    bar.close()
    if writer is not None:
        writer.close()
    dist.barrier()  # best.safetensors is written
    load_weights(run_dir / "best.safetensors", model)
    return model


def score_cell(model: ProbeModel | None, task: Task, feats: dict[str, list],
               splits: dict[str, list[dict]], device, batch_frames: int,
               run_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Dev then test scores of the kept probe (or of the frozen features when the task
    trains nothing). Dev goes first: tasks tune post-processing there (SD's threshold and
    median filter, QbE's layer) and apply it to test; test writes its files to run_dir."""
    dev = (evaluate(model, task, "dev", feats["dev"], splits["dev"], device, batch_frames)
           if "dev" in splits else {})
    test = evaluate(model, task, "test", feats["test"], splits["test"], device, batch_frames,
                    out_dir=run_dir)
    return dev, test


def train_cell(cfg: DictConfig) -> dict:
    """Train and evaluate one (upstream, task) cell; returns the leaderboard row."""
    t0 = time.time()
    cell = prepare_cell(cfg)
    device, task, corpus, splits, info, run_dir = (cell.device, cell.task, cell.corpus,
                                                   cell.splits, cell.info, cell.run_dir)
    result_file = run_dir / "result.json"
    if result_file.is_file() and not cfg.force:
        row = json.loads(result_file.read_text())
        print(f"[train] already done (force=true to redo): {run_dir}")
        print(leaderboard.format_row(row))
        return row
    if dist.is_main():
        if cfg.force and run_dir.exists():
            shutil.rmtree(run_dir)  # force=true: start over, do not resume
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    dist.barrier()

    oc = cfg.downstream.optim
    feats = {s: split_features(cell.upstream, items, device, key=feature_key(cfg, cell, s), cfg=cfg,
                               progress=cfg.progress and dist.is_main(),
                               desc=f"{cfg.upstream.name} features ({s})")
             for s, items in splits.items()}
    num_layers = feats["test"][0].shape[0]
    cell.upstream = None  # features are extracted: free the upstream

    # a task that trains nothing (QbE) is scored on the frozen features themselves
    model = train_probe(cfg, task, feats, splits, device, run_dir) if task.trainable else None
    if not dist.is_main():  # rank 0 scores and records the cell; take its row
        dist.barrier()
        return dist.broadcast_object(None)
    dev, test = score_cell(model, task, feats, splits, device, oc.batch_frames, run_dir)
    row = {
        "run_id": str(run_dir.relative_to(Path(cfg.out_dir) / "runs")),
        "upstream": cfg.upstream.name, "weights_hash": info.weights_hash,
        "pretrain_corpus": info.pretrain_corpus, "task": task.name, "corpus": corpus.name,
        "metric": task.metric, "higher_is_better": int(task.higher_is_better),
        "dev_value": dev.get(task.metric, float("nan")), "test_value": test[task.metric],
        "metrics_json": json.dumps({"dev": dev or None, "test": test}),
        "seed": int(cfg.seed), "tuning": "frozen",
        "trainable_params": count_params(model, trainable_only=True) if model else 0,
        "upstream_params": info.params,
        "layer_weights": json.dumps(model.featurizer.layer_weights() if model
                                    else task.layer_weights(num_layers)),
        "wall_time_s": round(time.time() - t0, 1),
        "config_yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "code_version": code_version(), "run_dir": str(run_dir),
    }
    leaderboard.record(cfg.leaderboard, row)
    atomic_write_text(result_file, json.dumps(row, indent=1))
    print(leaderboard.format_row(row))
    dist.barrier()
    return dist.broadcast_object(row)


def evaluate_cell(cfg: DictConfig) -> dict[str, float]:
    """Re-score the kept probe of a trained cell on its test split (records nothing).
    Dev is scored first, as in training, for tasks that tune post-processing on it."""
    cell = prepare_cell(cfg)
    device, task, splits, run_dir = cell.device, cell.task, cell.splits, cell.run_dir
    if task.trainable and not (run_dir / "best.safetensors").is_file():
        raise SpeechSSLError(f"no trained probe at {run_dir}: run mode=train first")
    oc = cfg.downstream.optim
    needed = {s: splits[s] for s in ("dev", "test") if s in splits}
    feats = {s: split_features(cell.upstream, items, device, key=feature_key(cfg, cell, s),
                               cfg=cfg, progress=cfg.progress, desc=s)
             for s, items in needed.items()}
    model = None
    if task.trainable:
        num_layers, _, dim = feats["test"][0].shape
        model = ProbeModel(Featurizer(num_layers, **cfg.downstream.featurizer),
                           task.build_probe(dim)).to(device)
        load_weights(run_dir / "best.safetensors", model)
    _, test = score_cell(model, task, feats, needed, device, oc.batch_frames, run_dir)
    print(f"[evaluate] {cfg.upstream.name} x {task.name} on {cell.corpus.name} test: "
          + ", ".join(f"{k}={v:.2f}" for k, v in test.items()))
    return test
