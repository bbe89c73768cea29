"""Self-supervised pre-training: the step loop (speechssl/loop.py) with the upstream's own
loss in place of a probe, an lr schedule, logging, checkpoints that resume, and the dev
split scored on every scalar the loss reports, and a learning curve (``pretrain.dev_every``):
the pretext metrics and the phone PNMI of each layer's k-means units on dev items, drawn to
``curve.png``. Runs on one process or under torchrun with
DistributedDataParallel (docs/distributed.md). Where a cell's upstream weights come from
(a checkpoint, this run, or a new one) is speechssl/upstream/load.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from speechssl import distributed as dist
from speechssl import loop
from speechssl.atomic import atomic_write_text
from speechssl.checkpoint import save_training_state, save_weights
from speechssl.data.batching import LengthBucketSampler
from speechssl.data.corpus import Corpus
from speechssl.errors import ConfigError
from speechssl.features import input_dataset, is_text, loader, model_inputs
from speechssl.lock import locked
from speechssl.runtime import precision_of
from speechssl.upstream.base import Upstream
from speechssl.upstream.load import (
    build_from_config,
    check_not_longer,
    count_params,
    pretrain_dir,
    resolve_checkpoints,
    steps_done,
    upstream_options,
)


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


def split_items(model: Upstream, corpus: Corpus, split: str, limit: int = 0) -> list[dict]:
    """The pre-training ``split``'s items (audio: the ``pretrain`` subset; text upstreams:
    their ``text-pretrain`` subset); ``limit`` > 0 keeps that many, evenly spaced."""
    if is_text(model):
        from speechssl.text.data import text_items

        items = text_items(corpus, model.pretrain_subset, split)
    else:
        items = corpus.items("pretrain", split)
    if 0 < limit < len(items):
        items = [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]
    return items


def pretrain_data(model: Upstream, corpus: Corpus, split: str, pc: DictConfig, limit: int = 0):
    """(dataset, collate, per-item sizes, batch budget) of the pre-training ``split`` (see
    :func:`split_items`). Audio: sizes in seconds, ``pc.batch_seconds``; text upstreams:
    sizes in (estimated) tokens, ``pc.batch_tokens``."""
    items = split_items(model, corpus, split, limit)
    if is_text(model):
        from speechssl.text.data import approx_tokens

        # ids looked up at each access: a text upstream trains its tokenizer in ``prepare``
        dataset, collate = input_dataset(model, items, encode=model.encode_ids)
        return dataset, collate, [approx_tokens(it) for it in items], pc.batch_tokens
    dataset, collate = input_dataset(model, items)
    return dataset, collate, [it["duration"] for it in items], pc.batch_seconds


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
def dev_metrics(model: Upstream, corpus: Corpus, device, pc: DictConfig,
                limit: int = 0) -> dict[str, float]:
    """Every scalar the pretext loss reports (loss, accuracy, perplexity, ...) on the dev
    split (``limit`` > 0: that many items, evenly spaced), each averaged over items."""
    model.eval()
    dataset, collate, sizes, budget = pretrain_data(model, corpus, "dev", pc, limit)
    totals: dict[str, float] = {}
    n = 0
    for batch in loader(dataset, collate, list(LengthBucketSampler(sizes, budget, shuffle=False))):
        out = model.pretrain_loss(*model_inputs(batch, device))
        for key, value in out.items():
            if torch.is_tensor(value) and value.numel() == 1:
                totals[key] = totals.get(key, 0.0) + float(value) * len(batch["items"])
        n += len(batch["items"])
    model.train()
    return {key: total / max(n, 1) for key, total in totals.items()}


PNMI_CLUSTERS = 100  # k-means units per layer for the curve's PNMI (HuBERT iteration 1's count)
PNMI_FRAMES = 20000  # frames the k-means is fitted on (all frames are labelled)


@torch.no_grad()
def phone_pnmi(model: Upstream, items: list[dict], device) -> dict[str, float]:
    """How much phone information each hidden layer's k-means units carry (HuBERT, Hsu et
    al., 2021, section IV-F): k-means with :data:`PNMI_CLUSTERS` units on each layer's
    frames of ``items``, then PNMI (I(phone; unit) / H(phone)) against the items' phone
    alignments. Returns ``phone_pnmi`` (the best layer's) and ``phone_pnmi_layer``; {} when
    no item is aligned (real corpora without alignments, text)."""
    from speechssl.data.audio import load_audio
    from speechssl.nn.kmeans import assign, cluster_quality, fit_kmeans, phone_frames

    items = [it for it in items if "alignment" in it]
    if is_text(model) or not items:
        return {}
    was_training = model.training
    model.eval()
    layers: list[list[np.ndarray]] = []
    labels = []
    for it in items:
        wav = load_audio(it["path"], model.sample_rate).to(device)
        out = model(wav.unsqueeze(0), torch.tensor([wav.numel()], device=device))
        n = int(out.lengths[0])
        if not layers:
            layers = [[] for _ in out.hidden_states]
        for store, h in zip(layers, out.hidden_states, strict=True):
            store.append(h[0, :n].float().cpu().numpy())
        labels.append(phone_frames(it["alignment"], n, hop=model.downsample_rate,
                                   sample_rate=model.sample_rate))
    model.train(was_training)
    phones = np.concatenate(labels)
    pnmi = []
    for store in layers:
        frames = np.concatenate(store)
        centroids = fit_kmeans(frames, PNMI_CLUSTERS, seed=0, max_frames=PNMI_FRAMES, n_init=1)
        units = assign(torch.from_numpy(frames), torch.from_numpy(centroids)).numpy()
        pnmi.append(cluster_quality(phones, units)["pnmi"])
    best = int(np.argmax(pnmi))
    return {"phone_pnmi": float(pnmi[best]), "phone_pnmi_layer": float(best)}


def curve_point(model: Upstream, corpus: Corpus, device, pc: DictConfig) -> dict[str, float]:
    """One point of the learning curve: the pretext metrics and the phone PNMI
    (:func:`phone_pnmi`) on ``pc.curve_items`` dev items (0 or unset: all). The random state is put back
    afterwards, so a run with a curve reaches the same weights as one without."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        limit = int(pc.get("curve_items") or 0)
        point = {f"dev_{k}": v for k, v in dev_metrics(model, corpus, device, pc, limit).items()}
        point.update(phone_pnmi(model, split_items(model, corpus, "dev", limit), device))
    return point


def pretrain(cfg: DictConfig, corpus: Corpus, device: torch.device) -> Path:
    """Pre-train ``cfg.upstream`` on the corpus's ``pretrain`` split; resumes from the last
    checkpoint of an interrupted run, and a run already finished at this budget is reused
    as it is. Returns the final safetensors file.

    One process at a time per run directory (a file lock; rank 0 under torchrun): a second
    process that needs the same run waits, then continues or reuses what the first left.
    Under torchrun every rank runs this; each global batch is split across the ranks
    (:func:`speechssl.distributed.shard_batch`, weighted by audio seconds or tokens) and
    rank 0 alone writes checkpoints, logs and the final weights."""
    resolve_checkpoints(cfg, corpus, device)  # a teacher, a unit model: pre-trained first
    pc = cfg.upstream.pretrain
    run = pretrain_dir(cfg, corpus)
    final = run / "model.safetensors"
    with locked(run, f"[pretrain] {run} is being pre-trained by another process: waiting "
                     "for it"):
        # rank 0 looks under the lock; the other ranks wait here for what it found
        done = dist.broadcast_object(steps_done(final, pc.steps) if dist.is_main() else None)
        if done is not None and done >= pc.steps:
            check_not_longer(run, done, pc.steps)
            if dist.is_main():
                print(f"[pretrain] {run} is already pre-trained for {done} steps: using it")
            return final
        return _pretrain(cfg, corpus, device, run)


def _pretrain(cfg: DictConfig, corpus: Corpus, device: torch.device, run: Path) -> Path:
    """The body of :func:`pretrain`, run while holding the run directory."""
    pc = cfg.upstream.pretrain
    info = dist.world()
    main = info.rank == 0
    device = dist.local_device(device)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg.upstream).to(device)
    if not model.can_pretrain:
        raise ConfigError(f"upstream {cfg.upstream.name!r} has nothing to pre-train")
    dataset, collate, sizes, budget = pretrain_data(model, corpus, "train", pc)
    sampler = LengthBucketSampler(sizes, budget, shuffle=True, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=pc.lr, weight_decay=pc.weight_decay)
    # seconds: wall time so far; curve: the learning curve's points, curve_seconds their cost
    state = loop.resume(run, model, opt, {"seconds": 0.0, "curve": [], "curve_seconds": 0.0},
                        "pretrain")
    dev_every = int(pc.get("dev_every") or 0)
    check_not_longer(run, state["step"], pc.steps)
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

    def add_curve_point() -> None:  # rank 0
        began = time.time()
        point = curve_point(model, corpus, device, pc)
        state["curve"].append({"step": state["step"], **point})
        for key, value in point.items():
            writer.add_scalar(f"pretrain/curve_{key}", value, state["step"])
        state["curve_seconds"] += time.time() - began
        shown = ", ".join(f"{k} {v:.4g}" for k, v in point.items())
        bar.write(f"[pretrain] step {state['step']}: {shown}")

    if main and dev_every and not state["curve"]:  # the starting point: chance level
        add_curve_point()

    def load(global_batches):  # this rank's share of each global batch, read by workers
        mine = loop.shares(global_batches, sizes)
        data = loader(dataset, collate, [idx for idx, _ in mine], cfg.num_workers)
        return zip(data, [weight for _, weight in mine], strict=True)

    for batch, weight in loop.batches(sampler, state, load):
        if state["step"] >= pc.steps:
            break
        lr = lr_at(state["step"], pc)
        for group in opt.param_groups:
            group["lr"] = lr
        model.before_step(state["step"])  # e.g. deepcluster's new round
        out, grad_norm = loop.step(step_model, model_inputs(batch, device), opt, state,
                                   weight=weight, device=device, precision=precision_of(cfg),
                                   grad_clip=pc.grad_clip)
        model.after_step(state["step"])  # e.g. data2vec's EMA teacher update
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
        if main and dev_every and (state["step"] % dev_every == 0 or state["step"] >= pc.steps):
            add_curve_point()
        if main and (state["step"] % pc.save_every == 0 or state["step"] >= pc.steps):
            state["seconds"] = time.time() - start
            save_training_state(run / "last", model, opt, state)
        if state["step"] >= pc.steps:
            break
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
               "wall_time_s": round(time.time() - start - state["curve_seconds"], 1),
               "curve_s": round(state["curve_seconds"], 1), "curve": state["curve"],
               "weights": str(final)}
    if state["curve"]:
        from speechssl.plots import pretrain_curves_png, read_tb_scalars

        loss = read_tb_scalars(run / "tb").get("pretrain/loss", ([], []))
        (run / "curve.png").write_bytes(pretrain_curves_png(
            loss, state["curve"], f"{cfg.upstream.name} pre-training on {corpus.name}"))
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1))
    accuracies = "".join(f"dev {k} {v:.4f}, " for k, v in dev.items() if "accuracy" in k)
    print(f"[pretrain] {cfg.upstream.name} on {corpus.name}: {state['step']} steps, "
          f"train loss {last_loss:.4f}, dev loss {loss_dev:.4f}, {accuracies}"
          f"{summary['params'] / 1e6:.2f} M params, {summary['wall_time_s']:.0f} s -> {final}")
    dist.barrier()
    return final
