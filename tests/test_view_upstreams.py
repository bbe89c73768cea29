"""Upstreams that learn from two augmented views of a clip (issue 26): byol_a (BYOL),
delores (Barlow Twins / VICReg), speech_simclr (NT-Xent + reconstruction). Objective tests
on sixteen tiny-corpus clips: the pretext metric leaves chance; BYOL's collapse without its
predictor and moving-average target; the EMA target gets no gradient."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream

CNN = {"channels": 8, "dim": 64, "time_pool": [2, 1, 1], "crop_frames": 32, "dropout": 0.0,
       "memory_size": 32}
TINY = {
    "byol_a": ("byol_a", {**CNN, "projector": [64, 32]}),
    "delores": ("delores", {**CNN, "expander": [64, 64]}),
    "delores-vicreg": ("delores", {**CNN, "expander": [64, 64], "loss": "vicreg"}),
    "speech_simclr": ("speech_simclr", {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                        "ff_size": 64, "projector": [32, 16], "dropout": 0.0,
                                        "crop_seconds": 0.5}),
}
# the metric that says whether the two views of a clip are recognised among the batch's, and
# its chance level with 16 clips: view 1 -> its view 2 among 16; NT-Xent: among 31 views
METRIC = {"byol_a": ("pair_accuracy", 1 / 16), "delores": ("pair_accuracy", 1 / 16),
          "delores-vicreg": ("pair_accuracy", 1 / 16), "speech_simclr": ("accuracy", 1 / 31)}


def _build(key: str, **extra):
    name, opts = TINY[key]
    return build_upstream(name, **{**opts, **extra})


@pytest.fixture(scope="module")
def clips(tiny_corpus):
    from speechssl.data.batching import AudioDataset, collate_audio

    items = tiny_corpus.items("pretrain", "train")[:16]
    batch = collate_audio([AudioDataset(items)[i] for i in range(len(items))])
    # 1.2 s from 0.3 s into each utterance: enough for a few dozen fast steps
    return batch["audio"][:, 4800:24000].contiguous(), torch.full((16,), 19200)


def _train(up, clips, steps: int, lr: float = 3e-3) -> list[dict]:
    opt = torch.optim.Adam(up.parameters(), lr=lr)
    logs = []
    for step in range(steps):
        out = up.pretrain_loss(*clips)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        up.after_step(step + 1)
        logs.append({k: float(v) for k, v in out.items()})
    return logs


def _mean_metric(up, clips, key: str, draws: int = 4) -> float:
    """The metric averaged over ``draws`` seeded draws of the views (no update)."""
    values = []
    for seed in range(draws):
        torch.manual_seed(1000 + seed)
        with torch.no_grad():
            values.append(float(up.pretrain_loss(*clips)[key]))
    return sum(values) / len(values)


# delores-vicreg learns as well (0.36-0.58 measured); its loss is checked against the formula
# (tests/test_joint_embedding.py), and the objective runs are kept to one per model for CI time
@pytest.mark.parametrize("key", ["byol_a", "delores", "speech_simclr"])
def test_views_of_a_clip_are_recognised_far_above_chance(key, clips):
    """Measured (80 steps, lr 3e-3, seeds 0 and 1): byol_a 0.38 (6x chance), delores
    0.44-0.47, delores-vicreg 0.36-0.58, speech_simclr (1-s crops) 0.31-0.48 (10-15x); the
    loss falls for every one (VICReg's least: its variance hinge holds it up)."""
    metric, chance = METRIC[key]
    torch.manual_seed(0)
    up = _build(key).train()
    before = _mean_metric(up, clips, metric)
    logs = _train(up, clips, 80)
    after = _mean_metric(up, clips, metric)
    assert after > 3 * chance and after > before, (before, after)
    first, last = logs[0]["loss"], sum(x["loss"] for x in logs[-10:]) / 10
    assert last < 0.9 * first, (first, last)


def test_byol_collapses_without_its_predictor_and_moving_target(clips):
    """BYOL's warning: with neither the predictor nor the EMA target (the target is the online
    network, stop-gradient only), both views map to one point and the regression loss goes to
    zero (measured: normalised std 0.006 after 150 steps against 0.13 for BYOL)."""
    stds = {}
    for label, extra in (("byol", {}), ("neither", {"predictor": False, "ema_decay": 0.0})):
        torch.manual_seed(0)
        up = _build("byol_a", **extra).train()
        logs = _train(up, clips, 60)
        stds[label] = sum(x["embedding_std"] for x in logs[-10:]) / 10
        if label == "neither":
            assert logs[-1]["loss"] < 0.05, logs[-1]
    assert stds["neither"] < 0.3 * stds["byol"], stds


def test_byol_target_gets_no_gradient_and_moves_only_by_ema(clips):
    torch.manual_seed(0)
    up = _build("byol_a").train()
    before = [p.detach().clone() for p in up.target_encoder.parameters()]
    up.pretrain_loss(*clips)["loss"].backward()
    assert all(p.grad is None for p in up.target_encoder.parameters())
    assert all(p.grad is None for p in up.target_projector.parameters())
    assert up.encoder.fc1.weight.grad is not None
    with torch.no_grad():
        for p in up.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.1)
    up.after_step(1)
    tau = up.ema_decay
    for t, t0, s in zip(up.target_encoder.parameters(), before, up.encoder.parameters(),
                        strict=True):
        assert torch.allclose(t, tau * t0 + (1 - tau) * s, atol=1e-6)


def test_the_views_differ_and_draws_follow_the_seed(clips):
    up = _build("byol_a").eval()
    g = torch.Generator().manual_seed(0)
    v1, v2 = up.views(*clips, g)
    assert v1.shape == v2.shape == (16, 32, 64) and not torch.allclose(v1, v2)
    again = up.views(*clips, torch.Generator().manual_seed(0))
    assert torch.equal(v1, again[0]) and torch.equal(v2, again[1])


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="loss"):
        _build("delores", loss="simclr")
    with pytest.raises(ConfigError, match="time_pool"):
        _build("byol_a", time_pool=[2, 2])
    with pytest.raises(ConfigError, match="mel_bins"):
        _build("byol_a", mel_bins=60)
    with pytest.raises(ConfigError, match="ema_decay"):
        _build("byol_a", ema_decay=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        _build("speech_simclr", temperature=0.0)


@pytest.mark.parametrize("key", ["byol_a", "delores", "speech_simclr"])
def test_pretrain_mode_then_a_ks_cell(key, make_cfg, tiny_corpus):
    """Pre-training through run.py's path (2 steps), then a frozen KS probe on the result."""
    from speechssl.pretrain import pretrain
    from speechssl.train import train_cell

    name, opts = TINY[key]
    over = [f"upstream.{k}={json.dumps(v)}" for k, v in opts.items()]
    cfg = make_cfg(f"upstream={name}", "downstream=ks", *over, "upstream.pretrain.steps=2",
                   "upstream.pretrain.batch_seconds=30", "downstream.optim.max_steps=20",
                   "downstream.optim.eval_every=10")
    path = pretrain(cfg, tiny_corpus, torch.device("cpu"))
    dev = json.loads((path.parent / "summary.json").read_text())["dev"]
    assert METRIC[key][0] in dev and "loss" in dev
    row = train_cell(cfg)  # reuses the checkpoint just written
    assert row["upstream"] == name and 0.0 <= row["test_value"] <= 100.0
    assert len(json.loads(row["layer_weights"])) == (2 if name != "speech_simclr" else 3)
