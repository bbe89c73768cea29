"""The shared step loop (speechssl/loop.py): gradient accumulation (s3prl's
gradient_accumulate_steps, ``downstream.optim.accumulate``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from speechssl import loop


def _model_and_opt():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_two_accumulated_halves_make_the_update_of_the_whole_batch():
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def loss_of(xb, yb):
        return nn.functional.mse_loss(model(xb), yb)

    model, opt = _model_and_opt()
    whole = {"step": 0, "pos": 0}
    _, norm = loop.step(loss_of, (x, y), opt, whole, weight=1.0, device=torch.device("cpu"),
                        precision="fp32", grad_clip=100.0)
    expected = [p.detach().clone() for p in model.parameters()]

    model, opt = _model_and_opt()
    halves = {"step": 0, "pos": 0}
    _, first = loop.step(loss_of, (x[:4], y[:4]), opt, halves, weight=1.0,
                         device=torch.device("cpu"), precision="fp32", grad_clip=100.0,
                         accumulate=2)
    assert first is None and halves["step"] == 0 and halves["pos"] == 1  # accumulated only
    _, second = loop.step(loss_of, (x[4:], y[4:]), opt, halves, weight=1.0,
                          device=torch.device("cpu"), precision="fp32", grad_clip=100.0,
                          accumulate=2)
    assert halves["step"] == 1 and halves["pos"] == 2 and halves["micro"] == 0
    torch.testing.assert_close(second, norm)  # the norm of the same summed gradient
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_probe_steps_count_updates_with_accumulation(make_cfg):
    """``downstream.optim.accumulate=2``: max_steps and eval_every count updates (two
    batches each); the run ends after max_steps updates."""
    from speechssl.train import train_cell

    cfg = make_cfg("upstream=fbank", "downstream=ks", "downstream.optim.max_steps=4",
                   "downstream.optim.eval_every=2", "downstream.optim.accumulate=2",
                   "downstream.optim.batch_utterances=8")
    row = train_cell(cfg)
    history = json.loads(row["metrics_json"])["history"]
    assert [h[0] for h in history] == [2, 4]
    state = json.loads((Path(row["run_dir"]) / "last" / "state.json").read_text())
    assert state["step"] == 4 and state["micro"] == 0  # saved after an update, never mid-way


def test_class_balanced_probe_training(make_cfg):
    """``downstream.optim.class_balanced=true`` trains KS on a class-balanced draw; a task
    without one class per utterance refuses it by name."""
    import pytest

    from speechssl.errors import ConfigError
    from speechssl.train import train_cell

    row = train_cell(make_cfg("upstream=fbank", "downstream=ks", "downstream.optim.max_steps=4",
                              "downstream.optim.eval_every=2",
                              "downstream.optim.class_balanced=true"))
    assert 0.0 <= row["test_value"] <= 100.0
    with pytest.raises(ConfigError, match="class_balanced=true: pr has no single class"):
        train_cell(make_cfg("upstream=fbank", "downstream=pr", "downstream.optim.max_steps=2",
                            "+downstream.optim.class_balanced=true"))
