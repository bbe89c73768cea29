"""Sweeps through run.py on the tiny corpus: a Hydra multirun of 3 upstreams x 2 tasks fills
the table (printed once, with CSV, HTML and PNGs), mode=leaderboard re-renders it, suite=
runs every task of the suite skipping done cells, and submitit's local executor runs a cell."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest

from speechssl import score, store
from speechssl.cli import expand_suite

ROOT = Path(__file__).resolve().parent.parent

BUDGET = ["downstream.optim.max_steps=6", "downstream.optim.eval_every=3", "progress=false",
          "corpus.size=tiny", "num_threads=1"]
UPSTREAMS, TASKS = ["fbank", "mfcc", "spectrogram"], ["ks", "pr"]


def run_py(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def sweep(data_dir, tmp_path_factory):
    """The tiny multirun, once for this module: (out_dir, completed process)."""
    out_dir = tmp_path_factory.mktemp("sweep")
    proc = run_py("-m", f"upstream={','.join(UPSTREAMS)}", f"downstream={','.join(TASKS)}",
                  f"data_dir={data_dir}", f"out_dir={out_dir}", *BUDGET)
    return out_dir, proc


def test_multirun_fills_the_table_once(sweep):
    out_dir, proc = sweep
    stored = store.rows(out_dir / "leaderboard.sqlite")
    assert sorted((r["upstream"], r["task"]) for r in stored) == sorted(
        (u, t) for u in UPSTREAMS for t in TASKS)
    assert proc.stdout.count("| upstream |") == 1  # each job quiet, the table once at the end
    table = proc.stdout[proc.stdout.index("| upstream |"):]
    assert table.splitlines()[0] == "| upstream | ks (accuracy) | pr (per) | SUPERB score |"
    assert "| fbank |" in table and "| 0 (2/10 tasks) |" in table  # fbank is the baseline
    lb = out_dir / "leaderboard"
    with (lb / "cells.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6
    html = (lb / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2 + 6  # score bars, heat map, 6 curves
    assert len(list((lb / "curves").glob("*.png"))) == 6
    assert (lb / "score_synth-tiny-seed0.png").is_file()


def test_mode_leaderboard_renders_the_store(sweep):
    out_dir, _ = sweep
    proc = run_py("mode=leaderboard", f"out_dir={out_dir}", f"report_dir={out_dir}/report")
    md = (out_dir / "report" / "leaderboard.md").read_text()
    assert md.strip() in proc.stdout
    assert md == (out_dir / "leaderboard" / "leaderboard.md").read_text()
    assert (out_dir / "report" / "index.html").is_file()


def test_suite_runs_its_tasks_and_skips_done_cells(sweep, data_dir):
    out_dir, _ = sweep
    # num_threads=0: the parallel launcher's two cells share the cores (joblib's OMP_NUM_THREADS)
    budget = [a for a in BUDGET if not a.startswith("num_threads=")]
    proc = run_py("suite=quick", "upstream=fbank", f"data_dir={data_dir}",
                  f"out_dir={out_dir}", *budget)
    assert proc.stdout.count("already done") == 2  # fbank x ks, pr from the sweep
    rows = {r["task"]: r for r in store.rows(out_dir / "leaderboard.sqlite")
            if r["upstream"] == "fbank"}
    assert set(rows) == {"pr", "ks", "ic"}
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, joblib.cpu_count() // 2))
    assert json.loads(rows["ic"]["timing_json"])["threads"] == threads
    table = proc.stdout[proc.stdout.index("| upstream |"):]
    assert "suite quick" in table and "ic (accuracy)" in table


def test_expand_suite_rewrites_only_a_training_suite_run():
    recipes = ROOT / "recipes"
    suite = score.load_suite("superb")
    assert sorted(suite["run_order"]) == sorted(suite["tasks"])
    assert suite["run_order"][:2] == ["asr", "sf"]  # the longest cells start first
    have = [t for t in suite["run_order"] if (recipes / "downstream" / f"{t}.yaml").is_file()]
    assert expand_suite(["suite=superb", "upstream=fbank,apc"], recipes) == [
        "-m", "suite=superb", "upstream=fbank,apc", "hydra/launcher=parallel",
        "downstream=" + ",".join(have)]
    assert expand_suite(["-m", "suite=superb"], recipes)[:2] == ["-m", "suite=superb"]
    # a launcher named on the command line is the one used (basic: one cell after another)
    assert expand_suite(["suite=superb", "hydra/launcher=basic"], recipes) == [
        "-m", "suite=superb", "hydra/launcher=basic", "downstream=" + ",".join(have)]
    for argv in (["suite=superb", "downstream=ks"], ["suite=superb", "mode=leaderboard"],
                 ["upstream=fbank"]):
        assert expand_suite(argv, recipes) == argv


def test_leaderboard_of_an_empty_store(make_cfg, capsys):
    from speechssl.report import report_from_config

    cfg = make_cfg("mode=leaderboard")
    assert report_from_config(cfg) is None
    assert "no results yet" in capsys.readouterr().out
    assert not Path(cfg.report_dir).exists()


def test_bad_suite_is_named_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, "run.py", "suite=nosuch", f"out_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "suite=nosuch" in out.stderr


def test_submitit_local_launcher_runs_a_cell(data_dir, tmp_path):
    proc = run_py("-m", "hydra/launcher=local", "upstream=fbank", "downstream=ks",
                  f"data_dir={data_dir}", f"out_dir={tmp_path}", *BUDGET)
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    (row,) = store.rows(tmp_path / "leaderboard.sqlite")
    assert (row["upstream"], row["task"]) == ("fbank", "ks")
    assert list(tmp_path.glob("hydra/multirun-*/.submitit/*"))  # the executor's job folder
    assert (tmp_path / "leaderboard" / "index.html").is_file()


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "recipes"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm",
                                           "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.max_num_timeout, launcher.gpus_per_node) == ("gpu", 3, 1)
    assert cfg.hydra.callbacks.leaderboard._target_ == "speechssl.report.LeaderboardCallback"


def test_bad_suite_value_in_the_config_is_named(make_cfg):
    from speechssl.config import check_values
    from speechssl.errors import ConfigError

    check_values(make_cfg("suite=quick"))  # the shipped suites are valid
    with pytest.raises(ConfigError, match=r"suite=superb: suite\.tasks must be a non-empty"):
        check_values(make_cfg("suite.tasks=[]"))
    with pytest.raises(ConfigError, match=r"points\.ks\.accuracy\.topline must be a number"):
        check_values(make_cfg("suite.references.0.points.ks.accuracy.topline=high"))


def test_num_threads_zero_shares_the_cores(monkeypatch):
    from speechssl.runtime import default_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a parallel launcher's cell, a batch job
    assert default_threads() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun (which sets OMP_NUM_THREADS=1)
    assert default_threads() == max(1, cores // 2)
