"""End to end on the tiny synthesized corpus: upstream -> features -> probe -> metric ->
leaderboard row, for fbank x {ks, pr, asr} and apc x ks, through run.py too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl import store
from speechssl.errors import AudioError
from speechssl.train import train_cell

ROOT = Path(__file__).resolve().parent.parent
BUDGET = ["downstream.optim.max_steps=120", "downstream.optim.eval_every=40"]


@pytest.mark.parametrize("task,metric,bound", [
    # the tiny KS (8 clips a class, recorded in the wild) is past learning for fbank: it runs;
    # SID (24 speakers) shows learning, clearly above chance
    ("ks", "accuracy", lambda v: 0.0 <= v <= 100.0),
    ("sid", "accuracy", lambda v: v > 3 * 100 / 24),
    # emits phones, not only blanks (only blanks: every phone deleted, exactly 100); the
    # format-3 tiny corpus (sessions) is too hard for 120 steps to get below 100
    ("pr", "per", lambda v: v != 100.0 and 0.0 <= v <= 200.0),
    ("asr", "wer", lambda v: 0.0 <= v <= 200.0),  # runs end to end; learning: test_ctc_tasks
])
def test_fbank_cell(make_cfg, task, metric, bound):
    steps = ["downstream.optim.max_steps=120", "downstream.optim.eval_every=40"]
    if task == "asr":  # one dev evaluation is enough to run end to end
        steps = ["downstream.optim.max_steps=40", "downstream.optim.eval_every=40"]
    cfg = make_cfg("upstream=fbank", f"downstream={task}", *steps)
    row = train_cell(cfg)
    assert row["metric"] == metric
    assert bound(row["test_value"]), row["test_value"]
    stored = store.rows(cfg.leaderboard)
    assert [(r["upstream"], r["task"]) for r in stored] == [("fbank", task)]
    assert stored[0]["test_value"] == pytest.approx(row["test_value"])
    assert json.loads(stored[0]["layer_weights"]) == [1.0]
    run_dir = Path(row["run_dir"])
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "result.json").is_file()


def test_apc_cell_pretrains_first_then_reuses(make_cfg, capsys):
    cfg = make_cfg("upstream=apc", "downstream=ks", "upstream.hidden_size=64",
                   "upstream.pretrain.steps=20", "upstream.pretrain.batch_seconds=30", *BUDGET)
    row = train_cell(cfg)
    out = capsys.readouterr().out
    assert "no pre-trained apc" in out and "pre-training it now" in out
    assert row["upstream"] == "apc" and 0.0 <= row["test_value"] <= 100.0
    weights = json.loads(row["layer_weights"])
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
    # a second cell on the same corpus reuses the checkpoint, and a finished cell is skipped
    again = train_cell(cfg)
    out = capsys.readouterr().out
    assert "using pre-trained apc" in out and "already done" in out
    assert again["weights_hash"] == row["weights_hash"]


def test_run_py_end_to_end(data_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, "run.py", "upstream=fbank", "downstream=ks", "corpus.size=tiny",
         f"data_dir={data_dir}", f"out_dir={tmp_path}", "progress=false", *BUDGET],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test accuracy" in out.stdout and "| upstream | ks (accuracy) |" in out.stdout
    assert len(store.rows(tmp_path / "leaderboard.sqlite")) == 1


def test_corrupt_audio_is_named(make_cfg, data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    corpus = copy / "synth" / "synth-tiny-seed0"
    manifest = corpus / "manifests" / "ks" / "dev.jsonl"
    line3 = json.loads(manifest.read_text().splitlines()[2])
    bad = corpus / line3["path"]
    # garbage of the file's own size: a missing or cut-short synthesized WAV is rendered
    # again on load (speechssl.data.synth.generate.damaged_files), a corrupt one is named
    size = bad.stat().st_size
    garbage = b"RIFF\x00\x00garbage"
    bad.write_bytes((garbage * (size // len(garbage) + 1))[:size])
    cfg = make_cfg("upstream=fbank", "downstream=ks", f"data_dir={copy}", *BUDGET)
    with pytest.raises(AudioError) as err:
        train_cell(cfg)
    assert str(bad) in str(err.value) and f"{manifest}:3" in str(err.value)
    # through the command line: one clear line, exit code 2, no traceback
    out = subprocess.run(
        [sys.executable, "run.py", "upstream=fbank", "downstream=ks", "corpus.size=tiny",
         f"data_dir={copy}", f"out_dir={tmp_path / 'cli'}", "progress=false", *BUDGET],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and str(bad) in out.stderr
    assert "Traceback" not in out.stderr


def test_interrupted_cell_resumes_to_the_same_result(make_cfg, tmp_path, monkeypatch, capsys):
    import speechssl.train as train_mod

    args = ["upstream=fbank", "downstream=ks", "downstream.optim.max_steps=60",
            "downstream.optim.eval_every=20", "downstream.optim.patience=10",
            "downstream.optim.lr_decay=0.5", "downstream.optim.decay_patience=1"]
    reference = train_cell(make_cfg(*args, f"out_dir={tmp_path / 'a'}"))

    real_evaluate, calls = train_mod.evaluate, []

    def dies_on_second_evaluation(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # at step 40, before its checkpoint: the last one is step 20
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(train_mod, "evaluate", dies_on_second_evaluation)
    cfg = make_cfg(*args, f"out_dir={tmp_path / 'b'}")
    with pytest.raises(KeyboardInterrupt):
        train_cell(cfg)
    assert store.rows(cfg.leaderboard) == []  # an interrupted run records nothing
    monkeypatch.setattr(train_mod, "evaluate", real_evaluate)
    resumed = train_cell(cfg)
    assert "resuming" in capsys.readouterr().out
    assert resumed["test_value"] == reference["test_value"]
    assert resumed["metrics_json"] == reference["metrics_json"]


def test_patience_counts_gains_beyond_noise_and_the_rate_decays(make_cfg, monkeypatch):
    """A dev metric creeping up by less than 0.5 % (relative) in all stops the run after
    ``patience`` evaluations, and every
    ``decay_patience`` of them multiplies the learning rate by ``lr_decay``."""
    import speechssl.train as train_mod

    dev = iter([50.0, 50.05, 50.1, 50.15, 80.0])  # 0.1 % steps; the jump would come too late
    rates = []

    def scripted(model, task, split, *a, **k):
        if split != "dev":
            return real_evaluate(model, task, split, *a, **k)
        return {task.metric: next(dev)}

    real_evaluate, real_decay = train_mod.evaluate, train_mod.decay_on_plateau

    def recorded_decay(opt, bad_evals, oc):
        real_decay(opt, bad_evals, oc)
        rates.append(opt.param_groups[0]["lr"])

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    monkeypatch.setattr(train_mod, "decay_on_plateau", recorded_decay)
    row = train_cell(make_cfg(
        "upstream=fbank", "downstream=ks", "downstream.optim.lr=0.01",
        "downstream.optim.max_steps=200", "downstream.optim.eval_every=10",
        "downstream.optim.patience=3", "downstream.optim.lr_decay=0.5",
        "downstream.optim.decay_patience=2"))
    history = json.loads(row["metrics_json"])["history"]
    assert [v for _, v in history] == [50.0, 50.05, 50.1, 50.15]  # stopped at the fourth
    assert row["converged"] == 1
    assert rates == [0.01, 0.005, 0.005]  # halved at the second evaluation without a gain


def test_evaluate_mode_rescores_the_kept_probe(make_cfg):
    from speechssl.train import evaluate_cell

    cfg = make_cfg("upstream=fbank", "downstream=ks", *BUDGET)
    row = train_cell(cfg)
    assert evaluate_cell(cfg)["accuracy"] == pytest.approx(row["test_value"])


def test_lr_search_runs_the_grid_and_the_table_keeps_the_dev_best(data_dir, tmp_path):
    """lr_search=true: one run per downstream.optim.lr_grid value, each its own row; the
    leaderboard shows the dev-best with the lr it chose; every row says whether its probe
    converged."""
    out = subprocess.run(
        [sys.executable, "run.py", "upstream=fbank", "downstream=ks", "corpus.size=tiny",
         f"data_dir={data_dir}", f"out_dir={tmp_path}", "progress=false", "num_threads=1",
         "lr_search=true", "downstream.optim.lr_grid=[0.0001,0.1]", *BUDGET],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = store.rows(tmp_path / "leaderboard.sqlite")
    lrs = sorted(json.loads(json.dumps(__import__("yaml").safe_load(r["config_yaml"])))
                 ["downstream"]["optim"]["lr"] for r in rows)
    assert lrs == [0.0001, 0.1]
    assert all(r["converged"] in (0, 1) for r in rows)
    assert "[train] lr search of fbank x ks (dev accuracy):" in out.stdout
    assert "the leaderboard keeps this one" in out.stdout
    best = max(rows, key=lambda r: r["dev_value"])
    lr_best = __import__("yaml").safe_load(best["config_yaml"])["downstream"]["optim"]["lr"]
    assert f"best on dev: optim.lr={lr_best}" in out.stdout


def test_probe_batches_count_audio_not_upstream_frames(make_cfg):
    """Two upstreams of 10 ms and 20 ms frames get the same utterances in every probe batch
    (batches count seconds of audio), and a mean-pool probe counts utterances."""
    from speechssl.features import CachedLayers, batch_sizes
    from speechssl.train import batch_budget

    cfg = make_cfg("upstream=fbank", "downstream=pr")
    items = [{"duration": d} for d in (1.0, 2.5, 0.7, 3.1, 1.9, 2.2)]
    import torch

    feats10 = [torch.zeros(1, int(it["duration"] * 100), 4) for it in items]
    feats20 = [torch.zeros(1, int(it["duration"] * 50), 4) for it in items]
    from downstream.base import task_from_config
    from speechssl.data.batching import LengthBucketSampler

    task = task_from_config(cfg.downstream)
    batches = []
    for feats in (feats10, feats20):
        src = CachedLayers(feats, torch.device("cpu"), batch_sizes(items, text=False))
        budget = batch_budget(cfg, task, src)
        assert budget == cfg.downstream.optim.batch_seconds
        batches.append(list(LengthBucketSampler(src.sizes, 5.0, shuffle=True, seed=3)))
    assert batches[0] == batches[1]
    pooled = CachedLayers([f[:, :1] for f in feats10], torch.device("cpu"),
                          batch_sizes(items, text=False), pooled=True)
    assert pooled.sizes == [1.0] * 6
    cfg_ks = make_cfg("upstream=fbank", "downstream=ks")
    ks = task_from_config(cfg_ks.downstream)
    assert batch_budget(cfg_ks, ks, pooled) == cfg_ks.downstream.optim.batch_utterances
    layers, lengths = pooled([2, 0])
    assert layers.shape == (1, 2, 1, 4) and lengths.tolist() == [1, 1]
