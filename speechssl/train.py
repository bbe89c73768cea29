"""The downstream loop: the layers of each batch -> featurizer + probe, model selection on
dev, one evaluation on test, one row in the leaderboard. Readable top to bottom.

The step loop is speechssl/loop.py's. Where the layers of a batch come from is one small
object (speechssl/features.py): ``CachedLayers`` (frozen features extracted once,
speechssl/cache.py) or ``LiveLayers`` (the upstream runs on every batch: ``cache=false`` or
over budget, frozen and without gradients, the s3prl way; or a tuned upstream,
``tuning=full|scratch|adapter|lora|prefix|prompt``, speechssl/tuning.py, whose trained
parameters join the probe's). Under torchrun the trained module runs under
DistributedDataParallel; rank 0 alone evaluates, checkpoints and records
(docs/distributed.md, docs/tuning.md)."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from downstream.base import Task, task_from_config
from downstream.utterance import UtteranceClassification
from speechssl import convergence, loop, store, tuning
from speechssl import distributed as dist
from speechssl.atomic import atomic_write_text
from speechssl.checkpoint import load_weights, save_training_state, save_weights
from speechssl.data.batching import LengthBucketSampler
from speechssl.data.corpora.common import stable_fraction
from speechssl.data.corpus import Corpus, load_corpus
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.features import (
    CachedLayers,
    LiveLayers,
    batch_sizes,
    cached_features,
    extract_features,
)
from speechssl.featurizer import Featurizer, layer_statistics
from speechssl.runtime import code_version, config_hash, precision_of, resolve_device
from speechssl.upstream.base import Upstream
from speechssl.upstream.load import UpstreamInfo, build_from_config, count_params, load_upstream


class ProbeModel(nn.Module):
    """What trains downstream: the layer weights, the task head and, with a tuned upstream,
    the upstream parameters that train (the very Parameter objects of the upstream, named
    ``upstream.<its name with / for .>``), so optimizer and checkpoints hold them too."""

    def __init__(self, featurizer: Featurizer, head: nn.Module,
                 tuned: dict[str, nn.Parameter] | None = None):
        super().__init__()
        self.featurizer, self.head = featurizer, head
        self.upstream = nn.ParameterDict({n.replace(".", "/"): p for n, p in (tuned or {}).items()})


class ProbeLoss(nn.Module):
    """``forward`` is the task's loss on a batch, from item indices to the scalar: the layers
    come from ``source`` (a tuned upstream runs in here). DistributedDataParallel syncs the
    gradients of what runs through a wrapped module's forward, so this is what it wraps."""

    def __init__(self, model: ProbeModel, task: Task, source: CachedLayers | LiveLayers):
        super().__init__()
        self.model, self.task, self.source = model, task, source

    def forward(self, inputs, batch: dict) -> torch.Tensor:
        layers, lengths = self.source(inputs)  # (L, B, T, D), (B,)
        return self.task.loss(self.model.head, self.model.featurizer(layers, lengths), lengths,
                              batch)


def better(a: float, b: float | None, higher_is_better: bool) -> bool:
    return b is None or (a > b if higher_is_better else a < b)


@torch.no_grad()
def predict_split(model: ProbeModel | None, task: Task, source: CachedLayers | LiveLayers,
                  items: list[dict], batch_size: float) -> list:
    """Per-item predictions of the probe, in item order (batches in length order, no
    shuffling); leaves the model and the source in eval mode. With no probe
    (``task.trainable`` False) each item's (L, T, D) features are the predictions."""
    if model is not None:
        model.eval()
    source.eval()
    if model is None and isinstance(source, CachedLayers):
        return source.feats
    preds: list = [None] * len(items)
    for idx, inputs in source.batches(list(LengthBucketSampler(source.sizes, batch_size,
                                                               shuffle=False))):
        layers, lengths = source(inputs)
        if model is None:
            for b, i in enumerate(idx):
                preds[i] = layers[:, b, : int(lengths[b])].to("cpu", torch.float16)
            continue
        batch = {"items": [items[i] for i in idx]}
        for i, p in zip(idx, task.predict(model.head, model.featurizer(layers, lengths), lengths,
                                          batch), strict=True):
            preds[i] = p
    return preds


def evaluate(model: ProbeModel | None, task: Task, split: str, source: CachedLayers | LiveLayers,
             items: list[dict], batch_size: float, out_dir: Path | None = None) -> dict[str, float]:
    """Score the probe on one split (``batch_size``: :func:`batch_budget`); ``out_dir`` (final
    test pass) receives output files."""
    preds = predict_split(model, task, source, items, batch_size)
    return task.evaluate_split(split, preds, items, out_dir)


def run_dir_for(cfg: DictConfig, tag: str, task: str, corpus: str) -> Path:
    """One directory per (upstream weights, task, corpus, seed, probe and tuning config): a
    changed probe, optimizer or tuning setting is a new cell, never a resume of another.
    ``corpus`` is the corpus's key (:attr:`Corpus.key`: its name, options and manifests), so
    another copy or test set of a corpus is another cell too."""
    key = OmegaConf.to_container(cfg.downstream, resolve=True)
    if key.get("train_items", 0) is None:  # the default: directories stay as they were
        del key["train_items"]
    key.get("optim", {}).pop("lr_grid", None)  # the grid a search draws from is not the run
    if tuning.mode_of(cfg) != "frozen":  # frozen cells keep the directories they always had
        key = {"downstream": key, "tuning": OmegaConf.to_container(cfg.tuning, resolve=True)}
    probe = config_hash(key, n=8)
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
    tuned: dict[str, nn.Parameter]  # the upstream parameters that train (none when frozen)


def prepare_cell(cfg: DictConfig) -> Cell:
    """Task and its splits, the corpus (synthesized if needed), the upstream (pre-trained
    if needed) made ready for ``cfg.tuning``, and the cell's run directory."""
    device = dist.local_device(resolve_device(cfg.device))
    task = task_from_config(cfg.downstream)
    with dist.main_first():  # rank 0 synthesizes the corpus if needed, the others read it
        corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
    splits = task.splits(corpus)
    if "train" in splits:  # QbE has no training split
        splits["train"] = train_subset(splits["train"], cfg.downstream.get("train_items"))
    task.setup(splits.get("train", []))
    upstream, info = load_upstream(cfg, corpus, device)
    fresh = None
    if tuning.mode_of(cfg) == "scratch":  # the same architecture, randomly initialised
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            fresh = build_from_config(cfg.upstream)
    tuned = tuning.apply_tuning(upstream, cfg.get("tuning"), cfg.upstream.name, cfg.seed, fresh)
    task.frame_shift = upstream.downsample_rate / upstream.sample_rate
    task.device = str(device)
    run_dir = run_dir_for(cfg, info.tag(cfg.upstream.name), task.name, corpus.key)
    return Cell(device, task, corpus, splits, upstream, info, run_dir, tuned)


def train_subset(items: list[dict], n: int | None) -> list[dict]:
    """The first ``n`` training items in a fixed order set by each item's id alone
    (``downstream.train_items``; HuggingFace's ``max_train_samples``): the same subset for
    every upstream, tuning mode and seed, and nested (the 100 items are among the 1000).
    Kept in manifest order; ``None`` (or n >= len) keeps every item."""
    if n is None or n >= len(items):
        return items
    keep = set(sorted(range(len(items)), key=lambda i: stable_fraction(str(items[i]["id"])))[:n])
    if dist.is_main():
        print(f"[train] using {n} of {len(items)} training items (downstream.train_items={n})")
    return [it for i, it in enumerate(items) if i in keep]


def feature_key(cfg: DictConfig, cell: Cell, split: str) -> dict:
    """What a split's frozen features depend on: the upstream's weights and config, the
    corpus (its key: name, options and manifests) and the split (the cache key,
    speechssl/cache/; the cache adds the items and their audio files' size and mtime)."""
    return {"weights_hash": cell.info.weights_hash, "upstream": cfg.upstream.name,
            "upstream_config": OmegaConf.to_container(cfg.upstream, resolve=True),
            "corpus": cell.corpus.key, "split": split}


def trains_pooled(cfg: DictConfig, cell: Cell) -> bool:
    """Whether the probe trains on each item's mean vector per layer instead of its frames:
    a mean-pool probe (``Task.pooled_input``) on a frozen upstream, with no per-frame
    ``featurizer.layer_norm`` (which does not commute with the mean). Same result, a
    fraction of the cost: thousands of steps in seconds."""
    return (cell.task.pooled_input and not cell.tuned
            and not cfg.downstream.featurizer.get("layer_norm", False))


def batch_budget(cfg: DictConfig, task: Task, source: CachedLayers | LiveLayers) -> float:
    """A probe batch's size in its source's unit: ``optim.batch_utterances`` of pooled
    features, else ``optim.batch_seconds`` of padded audio or ``optim.batch_tokens`` (text
    tasks); never upstream frames (which would give a 20 ms upstream twice the audio of a
    10 ms one)."""
    oc = cfg.downstream.optim
    if getattr(source, "pooled", False):
        return float(oc.batch_utterances)
    return float(oc.batch_tokens if task.modality == "text" else oc.batch_seconds)


def layer_sources(cfg: DictConfig, cell: Cell,
                  splits: dict[str, list[dict]]) -> dict[str, CachedLayers | LiveLayers]:
    """Where each split's layers come from: the frozen-feature cache (or, with cache=false,
    memory for pooled features), or the upstream run on every batch (a tuned upstream;
    cache=false; a split over the cache budget). A mean-pool probe on a frozen upstream
    reads each item's mean vector per layer (:func:`trains_pooled`)."""
    trainable = bool(cell.tuned)
    pooled = trains_pooled(cfg, cell)
    text = cell.task.modality == "text"
    sources: dict[str, CachedLayers | LiveLayers] = {}
    for s, items in splits.items():
        feats = None
        progress, desc = cfg.progress and dist.is_main(), f"{cfg.upstream.name} features ({s})"
        batch_seconds = float(cfg.downstream.optim.extract_batch_seconds)
        if cfg.cache and not trainable:
            feats = cached_features(
                cell.upstream, items, cell.device, key=feature_key(cfg, cell, s),
                root=cfg.cache_dir, budget_gb=float(cfg.cache_budget_gb),
                batch_seconds=batch_seconds, num_workers=int(cfg.num_workers or 0),
                progress=progress, desc=desc, pooled=pooled)
        elif pooled:  # one small vector per item and layer: memory holds them
            feats = extract_features(cell.upstream, items, cell.device, batch_seconds,
                                     int(cfg.num_workers or 0), progress, desc, pooled=True)
        if feats is not None:
            sources[s] = CachedLayers(feats, cell.device, batch_sizes(items, text), pooled)
        else:
            sources[s] = LiveLayers(cell.upstream, items, cell.device, trainable,
                                    num_workers=int(cfg.num_workers or 0))
    live = [s for s, src in sources.items() if isinstance(src, LiveLayers)]
    if pooled and dist.is_main():
        print(f"[train] {cell.task.name}: the probe trains on each item's mean over frames "
              f"(per layer, pooled once: speechssl.features.mean_pooled)")
    if live and dist.is_main():
        why = f"tuning={tuning.mode_of(cfg)}" if trainable else "not cached"
        print(f"[train] {cfg.upstream.name} runs on every batch of {', '.join(live)} ({why})")
    return sources


def class_balance_weights(task: Task, items: list[dict]) -> list[float]:
    """1 / (items of its class) for every training item (``optim.class_balanced``: s3prl's
    KS sampler, a weighted draw with replacement that sees every class equally often)."""
    if not isinstance(task, UtteranceClassification):
        raise ConfigError(f"downstream.optim.class_balanced=true: {task.name} has no single "
                          "class per utterance (KS, SID, ER have)")
    labels = [task.reference(it) for it in items]
    counts = Counter(labels)
    return [1.0 / counts[label] for label in labels]


def param_groups(model: ProbeModel, lr: float, upstream_lr: float | None) -> list[dict]:
    """The probe's parameters at ``lr``; the tuned upstream's at ``upstream_lr``."""
    tuned = list(model.upstream.parameters())
    ids = {id(p) for p in tuned}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}]
    if tuned:
        groups.append({"params": tuned, "lr": upstream_lr})
    return groups


def train_probe(cfg: DictConfig, cell: Cell,
                sources: dict[str, CachedLayers | LiveLayers]) -> ProbeModel:
    """Train featurizer + probe (+ the tuned upstream parameters) on the train split
    (resuming ``run_dir/last``), keeping the dev-best weights in ``run_dir/best.safetensors``;
    a task with no dev split (ASV with ``dev_speakers=0``) keeps the last ones, as s3prl does. Returns the model
    holding the kept weights.

    Under torchrun every rank trains on its share of each global batch (item-count
    weighted, :func:`speechssl.distributed.shard_batch`); rank 0 evaluates dev, keeps the
    best weights and writes checkpoints, then shares the early-stopping state."""
    task, splits, device, run_dir = cell.task, cell.splits, cell.device, cell.run_dir
    oc = cfg.downstream.optim
    info = dist.world()
    main = info.rank == 0
    num_layers, dim = sources["train"].dims()
    torch.manual_seed(cfg.seed)
    model = ProbeModel(Featurizer(num_layers, dim, **cfg.downstream.featurizer),
                       task.build_probe(dim), cell.tuned).to(device)
    budget = batch_budget(cfg, task, sources["train"])
    if model.featurizer.standardize:
        fit_standardization(model.featurizer, sources["train"], budget)
    upstream_lr = cfg.tuning.get("upstream_lr") if cell.tuned else None
    opt = torch.optim.AdamW(param_groups(model, oc.lr, upstream_lr), lr=oc.lr,
                            weight_decay=oc.weight_decay)
    if main:
        n_up = count_params(model.upstream)
        n_all = cell.info.params if cell.upstream is None else count_params(cell.upstream)
        print(f"[train] tuning={tuning.mode_of(cfg)}: training {n_up:,} of {n_all:,} upstream "
              f"parameters ({100 * n_up / max(n_all, 1):.2f}%) + "
              f"{count_params(model) - n_up:,} featurizer and probe parameters")
    # best: the dev-best value (its weights are kept); anchor: the value of the last gain
    # beyond noise (convergence.significant), which patience counts from
    fresh = {"best": None, "best_dev": None, "anchor": None, "bad_evals": 0, "history": [],
             "loss_sum": 0.0, "loss_n": 0}
    state = loop.resume(run_dir, model, opt, fresh, "train")
    dist.seed_rank(cfg.seed, state["step"])
    train = sources["train"]
    step_model = dist.wrap_ddp(ProbeLoss(model, task, train))
    sampler = LengthBucketSampler(train.sizes, budget, shuffle=True, seed=cfg.seed,
                                  weights=class_balance_weights(task, splits["train"])
                                  if oc.get("class_balanced", False) else None)
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["step"]) if main else None
    bar = tqdm(total=oc.max_steps, initial=state["step"], disable=not (cfg.progress and main),
               desc=f"{task.name} probe on {cfg.upstream.name}")
    train_items = splits["train"]

    def load(global_batches):  # this rank's share of each global batch (item-count weighted)
        mine = loop.shares(global_batches)
        data = train.batches([idx for idx, _ in mine])
        return zip(data, [weight for _, weight in mine], strict=True)

    def finished() -> bool:
        return state["step"] >= oc.max_steps or state["bad_evals"] >= oc.patience

    accumulate = int(oc.get("accumulate", 1))  # batches per update (s3prl's gradient_accumulate_steps)
    micro_losses: list[float] = []
    step_model.train()
    for (idx, inputs), weight in loop.batches(sampler, state, load):
        if finished():
            break
        batch = {"items": [train_items[i] for i in idx]}
        loss, grad_norm = loop.step(step_model, (inputs, batch), opt, state, weight=weight,
                                    device=cell.device, precision=precision_of(cfg),
                                    grad_clip=oc.grad_clip, accumulate=accumulate)
        if info.world_size > 1:  # the global batch's loss, for the log
            loss = dist.all_reduce_sum(loss * weight)
        micro_losses.append(loss.item())
        if grad_norm is None:  # accumulating: no update yet
            continue
        bar.update(1)
        loss_value = sum(micro_losses) / len(micro_losses)
        micro_losses.clear()
        state["loss_sum"] += loss_value
        state["loss_n"] += 1
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if writer is not None:
            writer.add_scalar("train/loss", loss_value, state["step"])
        if state["step"] % oc.eval_every == 0 or state["step"] >= oc.max_steps:
            if not main:  # rank 0 evaluates and saves; take its early-stopping state
                state.update(dist.broadcast_object(None))
            elif "dev" in sources:
                dev = evaluate(model, task, "dev", sources["dev"], splits["dev"],
                               batch_budget(cfg, task, sources["dev"]))
                state["history"].append([state["step"], dev[task.metric]])
                for k, v in dev.items():
                    writer.add_scalar(f"dev/{k}", v, state["step"])
                value = dev[task.metric]
                if better(value, state["best"], task.higher_is_better):
                    state.update(best=value, best_dev=dev)
                    save_weights(run_dir / "best.safetensors", model)
                # patience counts evaluations without a gain beyond noise on the last real one
                if convergence.significant(value, state["anchor"], task.higher_is_better):
                    state.update(anchor=value, bad_evals=0)
                else:
                    state["bad_evals"] += 1
                    decay_on_plateau(opt, state["bad_evals"], oc)
                bar.write(f"step {state['step']}: dev {task.metric} {dev[task.metric]:.2f} "
                          f"(best {state['best']:.2f})")
            else:  # no dev split (ASV, dev_speakers=0): the last weights are the ones kept
                save_weights(run_dir / "best.safetensors", model)
                # convergence is judged on the training loss (mean since the last evaluation)
                state["history"].append([state["step"], state["loss_sum"] / max(state["loss_n"], 1)])
            state["loss_sum"], state["loss_n"] = 0.0, 0
            if main:
                save_training_state(run_dir / "last", model, opt, state)
                dist.broadcast_object(state)
            step_model.train()  # evaluation left the probe and the upstream in eval mode
        if finished():
            break
    bar.close()
    if writer is not None:
        writer.close()
    dist.barrier()  # best.safetensors is written
    load_weights(run_dir / "best.safetensors", model)
    model.history = state["history"]
    model.converged = convergence.converged(
        state["history"], task.higher_is_better if "dev" in sources else False,
        stopped_early=state["bad_evals"] >= oc.patience)
    return model


def decay_on_plateau(opt: torch.optim.Optimizer, bad_evals: int, oc: DictConfig) -> None:
    """Every ``decay_patience`` dev evaluations without improvement (short of ``patience``,
    which stops the run), multiply every learning rate by ``lr_decay`` ("newbob" annealing, as
    Kaldi's and SpeechBrain's ASR recipes do): a constant rate leaves the dev metric jumping
    around its plateau, a smaller one settles into it. ``lr_decay: 1.0`` keeps the rate constant.
    The optimizer's state carries the rate, so a resumed run goes on at the decayed one."""
    if oc.lr_decay < 1.0 and bad_evals < oc.patience and bad_evals % oc.decay_patience == 0:
        for group in opt.param_groups:
            group["lr"] *= oc.lr_decay


STATS_ITEMS = 512  # items a tuned upstream (run live) is standardised from: its first pass


def fit_standardization(featurizer: Featurizer, source: CachedLayers | LiveLayers,
                        budget: float) -> None:
    """Per-layer, per-dimension train statistics for ``featurizer.standardize``: over every
    training unit the probe sees (each item's mean vector for a pooled probe, every frame
    otherwise), or over the first :data:`STATS_ITEMS` items when the upstream runs live."""
    order = list(range(len(source.sizes)))
    if isinstance(source, LiveLayers):
        order = order[:STATS_ITEMS]
    sizes = [source.sizes[i] for i in order]
    batches = [[order[j] for j in b] for b in LengthBucketSampler(sizes, budget, shuffle=False)]
    device = featurizer.mean.device
    mean, std, cov = layer_statistics(source, batches, covariance=featurizer.whiten)
    featurizer.set_statistics(mean.to(device), std.to(device),
                              None if cov is None else cov.to(device))


def score_cell(model: ProbeModel | None, task: Task, sources: dict, splits: dict[str, list[dict]],
               budget: Callable[[CachedLayers | LiveLayers], float],
               run_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Dev then test scores (``budget(source)``: a batch's size, :func:`batch_budget`) of the kept weights (or of the frozen features when the task
    trains nothing). Dev goes first: tasks tune post-processing there (SD's threshold and
    median filter, QbE's layer) and apply it to test; test writes its files to run_dir."""
    dev = (evaluate(model, task, "dev", sources["dev"], splits["dev"], budget(sources["dev"]))
           if "dev" in splits else {})
    test = evaluate(model, task, "test", sources["test"], splits["test"],
                    budget(sources["test"]),
                    out_dir=run_dir)
    return dev, test


def train_cell(cfg: DictConfig) -> dict:
    """Train and evaluate one (upstream, task, tuning) cell; returns the leaderboard row."""
    t0 = time.time()
    cell = prepare_cell(cfg)
    task, corpus, splits, info, run_dir = cell.task, cell.corpus, cell.splits, cell.info, cell.run_dir
    result_file = run_dir / "result.json"
    if result_file.is_file() and not cfg.force:
        row = json.loads(result_file.read_text())
        print(f"[train] already done (force=true to redo): {run_dir}")
        print(store.format_row(row))
        return row
    if dist.is_main():
        if cfg.force and run_dir.exists():
            shutil.rmtree(run_dir)  # force=true: start over, do not resume
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    dist.barrier()

    t_features = time.time()
    sources = layer_sources(cfg, cell, splits)
    t_probe = time.time()
    num_layers = sources["test"].dims()[0]
    if all(isinstance(src, CachedLayers) for src in sources.values()):
        cell.upstream = None  # features are extracted: free the upstream

    # a task that trains nothing (QbE) is scored on the frozen features themselves
    model = train_probe(cfg, cell, sources) if task.trainable else None
    if not dist.is_main():  # rank 0 scores and records the cell; take its row
        dist.barrier()
        return dist.broadcast_object(None)
    t_score = time.time()
    dev, test = score_cell(model, task, sources, splits, lambda s: batch_budget(cfg, task, s),
                           run_dir)
    # where the wall time went: setup (corpus, upstream), features (cache or extraction),
    # probe training, scoring (benchmarks/bench_suite.py reads it)
    timing = {"setup_s": t_features - t0, "features_s": t_probe - t_features,
              "probe_s": t_score - t_probe, "score_s": time.time() - t_score}
    row = {
        "run_id": str(run_dir.relative_to(Path(cfg.out_dir) / "runs")),
        "upstream": cfg.upstream.name, "weights_hash": info.weights_hash,
        "pretrain_corpus": info.pretrain_corpus, "task": task.name, "corpus": corpus.name,
        "metric": task.metric, "higher_is_better": int(task.higher_is_better),
        "dev_value": dev.get(task.metric, float("nan")), "test_value": test[task.metric],
        "metrics_json": json.dumps({"dev": dev or None, "test": test,
                                    "history": model.history if model else None}),
        "timing_json": json.dumps({**{k: round(v, 1) for k, v in timing.items()},
                                   "threads": torch.get_num_threads()}),
        "seed": int(cfg.seed), "tuning": tuning.mode_of(cfg),
        "trainable_params": count_params(model, trainable_only=True) if model else 0,
        "converged": int(model.converged) if model else None,
        "upstream_params": info.params,
        "layer_weights": json.dumps(model.featurizer.layer_weights() if model
                                    else task.layer_weights(num_layers)),
        "wall_time_s": round(time.time() - t0, 1),
        "config_yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "code_version": code_version(), "run_dir": str(run_dir),
    }
    store.record(cfg.leaderboard, row)
    atomic_write_text(result_file, json.dumps(row, indent=1))
    print(store.format_row(row))
    dist.barrier()
    return dist.broadcast_object(row)


def evaluate_cell(cfg: DictConfig) -> dict[str, float]:
    """Re-score the kept weights of a trained cell on its test split (records nothing).
    Dev is scored first, as in training, for tasks that tune post-processing on it."""
    cell = prepare_cell(cfg)
    task, splits, run_dir = cell.task, cell.splits, cell.run_dir
    if task.trainable and not (run_dir / "best.safetensors").is_file():
        raise SpeechSSLError(f"no trained probe at {run_dir}: run mode=train first")
    needed = {s: splits[s] for s in ("dev", "test") if s in splits}
    sources = layer_sources(cfg, cell, needed)
    model = None
    if task.trainable:
        num_layers, dim = sources["test"].dims()
        model = ProbeModel(Featurizer(num_layers, dim, **cfg.downstream.featurizer),
                           task.build_probe(dim), cell.tuned).to(cell.device)
        load_weights(run_dir / "best.safetensors", model)
    _, test = score_cell(model, task, sources, needed, lambda s: batch_budget(cfg, task, s),
                         run_dir)
    print(f"[evaluate] {cfg.upstream.name} x {task.name} on {cell.corpus.name} test: "
          + ", ".join(f"{k}={v:.2f}" for k, v in test.items()))
    return test
