"""Smoke tests of benchmarks/: every script runs in its quick mode on the tiny corpus, with
its outputs under tmp_path, and prints its result table. No timing is asserted: this only
keeps the scripts from rotting while the package changes under them.

Each runs as ``python benchmarks/<script> --quick ...`` in a subprocess (cwd tmp_path), with
one torch thread where the script takes ``--threads`` (``num_threads=1`` for run.py), so a
busy machine does not make them crawl. What the quick modes skip when it is absent (the
s3prl venv of bench_upstream_throughput.py, a GPU for bench_pretrain_step.py) is skipped
by the scripts themselves, said in their output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
S3PRL_PYTHON = os.environ.get("S3PRL_PYTHON", "/tmp/s3prl-venv/bin/python")

# script -> (arguments after --quick: {data} = the tiny corpus's data dir, {tmp} = tmp_path;
# lines its stdout must contain)
CASES = {
    "bench_group_norm.py": (
        [],
        ["# MaskedGroupNorm vs F.group_norm", "| groups | implementation | median ms |",
         "| 512 | F.group_norm whole batch (no padding) |"]),
    "bench_error_rates.py": (
        [],
        ["# dev-set error rates: rapidfuzz vs pure Python", "| metric | value % |",
         "| WER |", "| CER |", "- speed-up = pure-Python median time / rapidfuzz"]),
    "bench_synth.py": (
        ["--tmp", "{tmp}"],
        ["# corpus synthesis throughput", "| setting | utterances | audio s |",
         "| num_workers=1 |", "speed-up vs 1 worker"]),
    "bench_probe_cache.py": (
        ["--data-dir", "{data}", "--threads", "1"],
        ["# probe training: cached features vs on-the-fly extraction",
         "| cell | layers x dim | train items |", "| apc x ks | 3 x 512 |",
         "| mockingjay x pr |", "- speed-up = on-the-fly s/step / cached s/step"]),
    "bench_pretrain_step.py": (
        ["--threads", "1", "--device", "cuda"],  # the CPU when there is no GPU
        ["| upstream | params M | ms/step fp32 | ms/step bf16 | fp32 / bf16 |",
         "| apc |", "| mockingjay |", "| wav2vec2 |", "| data2vec |"]),
    "bench_upstream_throughput.py": (
        ["--threads", "1", "--batch", "1", "--seconds", "1", "--repeats", "1"],
        ["# upstream forward throughput: ours vs s3prl", "| upstream | params M ours |",
         "| ours/s3prl |", "| apc |", "| wav2vec2 |", "| mfcc |",
         "- ratio = s3prl median time / our median time", "Architectures compared:"]),
    # --jobs 2: `run.py suite=` itself, two cells at a time, timed as a whole (runs.log)
    "bench_suite.py": (
        ["--data-dir", "{data}", "--tasks", "ks", "pr", "--set", "num_threads=1",
         "--out-dir", "{tmp}/suite", "--jobs", "2"],
        ["# the superb suite for fbank, task by task", "| task | metric | test | converged |",
         "| ks | accuracy |", "| pr | per |", "| sum of the cells |", "| **total** |",
         "with 2 cells at a time"]),
    "bench_demo.py": (
        ["--tmp", "{tmp}", "num_threads=1"],
        ["# end-to-end demo: python run.py upstream=apc downstream=asr",
         "| run | median wall | peak RSS |", "| cold |", "| warm |",
         "- cold / warm wall time:"]),
}


def test_every_script_has_a_case():
    scripts = {p.name for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts == set(CASES)


@pytest.mark.parametrize("script", list(CASES))
def test_quick_mode(script, data_dir, tmp_path):
    args, expected = CASES[script]
    args = [a.format(data=data_dir, tmp=tmp_path) for a in args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, log
    for line in expected:
        assert line in proc.stdout, f"{line!r} not printed\n{log}"
    if script == "bench_pretrain_step.py" and not torch.cuda.is_available():
        assert "CUDA is not available, ran on the CPU" in proc.stdout, log
    if script == "bench_upstream_throughput.py" and not Path(S3PRL_PYTHON).exists():
        assert "s3prl skipped" in proc.stdout, log
    if script == "bench_suite.py":
        ran = (tmp_path / "suite" / "runs.log").read_text()
        assert "hydra/launcher=parallel hydra.launcher.n_jobs=2" in ran, ran


def test_linear_reference(data_dir, tmp_path):
    """benchmarks/linear_reference.py (the corpus-headroom and probe-convergence yardstick)
    on the tiny corpus: a converged regression per task, a cosine EER for ASV."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "linear_reference.py"), "--tasks", "sid", "ic", "asv",
         "--C", "0.1", "1", "--set", f"data_dir={data_dir}", "--set", f"out_dir={tmp_path}",
         "--set", "corpus.size=tiny", "--set", "num_threads=1", "--set", "progress=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, log
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"task", "sid", "ic", "asv"}, log
    for task in ("sid", "ic"):
        metric, test, dev, c, converged = rows[task][:5]
        assert metric == "accuracy %" and 0 <= float(test) <= 100 and c in ("0.1", "1.0"), log
        assert converged == "yes", log
    assert 0 <= float(rows["asv"][1]) <= 100, log


def test_linear_reference_classification_matches_sklearn():
    """The per-field regression and the all-fields-right accuracy, on separable toy data."""
    import numpy as np

    sys.path.insert(0, str(BENCHMARKS))
    import linear_reference as L

    rng = np.random.default_rng(0)

    class Task:
        fields = ("a", "b")

        @staticmethod
        def reference(item):
            return item["y"]

    def split(n):
        y = rng.integers(0, 2, size=(n, 2))
        x = np.concatenate([y * 4.0 + rng.normal(0, 0.3, (n, 2)), rng.normal(0, 1, (n, 3))], 1)
        return [{"y": tuple(map(str, r))} for r in y], x[:, None, :]

    splits, pooled = {}, {}
    for s, n in (("train", 80), ("dev", 40), ("test", 40)):
        splits[s], pooled[s] = split(n)
    best = L.classification(Task(), splits, pooled, [0.01, 1.0], max_iter=1000)
    assert best["test"] == 100.0 and best["dev"] == 100.0 and best["converged"]
    assert best["layer"] == 0


def test_ssl_rank_scores_and_spearman_by_hand(tmp_path):
    """benchmarks/ssl_rank.py on a store of four upstreams x two tasks: our score on the
    synthesized corpus's scale (fbank 0, perfect 1000), the published one on SUPERB's, and
    Spearman over the models in both, all worked by hand."""
    from speechssl import store

    db = tmp_path / "leaderboard.sqlite"
    ours = {"fbank": (60.0, 40.0), "apc": (30.0, 70.0), "hubert": (45.0, 85.0),
            "mine": (0.0, 100.0)}  # (PR PER, KS accuracy); 'mine' has no published values
    for up, (per, acc) in ours.items():
        for task, metric, value, hib in (("pr", "per", per, 0), ("ks", "accuracy", acc, 1)):
            store.record(db, {"run_id": f"{up}-{task}", "upstream": up, "task": task,
                              "corpus": "synth-default-seed0", "metric": metric,
                              "higher_is_better": hib, "dev_value": value, "test_value": value,
                              "seed": 0, "config_yaml": ""})
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "ssl_rank.py"), "--store", str(db),
                           "--tasks", "pr", "ks"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # ours: apc (500 + 500) / 2 = 500; hubert (250 + 750) / 2 = 500; mine 1000
    # published: apc PR 1000 (82.01 - 41.98) / (82.01 - 3.53) = 510.07, KS 1000 (91.01 -
    # 41.38) / (96.66 - 41.38) = 897.79 -> 704; hubert (976.04 + 993.49) / 2 = 985
    assert "| mine | 0.00 | 100.00 | 1000 | - |" in out, out
    assert "| apc | 30.00 | 70.00 | 500 | 704 |" in out, out
    assert "| hubert | 45.00 | 85.00 | 500 | 985 |" in out, out
    # ranks over fbank, apc, hubert: ours (1, 2.5, 2.5), published (1, 2, 3): rho = 0.866
    assert "Spearman rank correlation over 3 models (apc, fbank, hubert): 0.866" in out, out


def test_unit_quality_scores_mfcc_and_each_teacher_layer(tmp_path, data_dir, tiny_corpus):
    """benchmarks/unit_quality.py: one row for MFCC and one per named layer of the teacher
    (a tiny apc), each the purity and PNMI of k-means on the same seeded utterances; the
    MFCC row is what HuBERT's own k-means step reports on those utterances."""
    import json

    import numpy as np

    from speechssl.checkpoint import save_weights
    from speechssl.upstream import build_upstream

    torch.manual_seed(0)
    opts = {"hidden_size": 16, "num_layers": 2}
    ckpt = tmp_path / "apc.safetensors"
    save_weights(ckpt, build_upstream("apc", **opts), {"upstream": "apc",
                                                       "options": json.dumps(opts)})
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "unit_quality.py"), "--teacher", str(ckpt),
         "--layers", "0", "1", "--clusters", "4", "--utterances", "5", "--set",
         "corpus.size=tiny", f"data_dir={data_dir}", "num_threads=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| MFCC + deltas (HuBERT iteration 1)", "| layer 0 of apc.safetensors",
        "| layer 1 of apc.safetensors"], proc.stdout
    items = tiny_corpus.items("pretrain", "train")
    pick = np.random.RandomState(0).choice(len(items), 5, False)
    hubert = build_upstream("hubert", frontend="fbank", hidden_size=32, num_layers=1,
                            num_heads=2, ff_size=32, num_clusters=4, kmeans_n_init=1)
    _, report = hubert.fit_targets([items[i] for i in sorted(pick)], torch.device("cpu"))
    cells = rows[0].split(" | ")
    assert int(cells[1]) == report["frames"]
    assert cells[2:4] == [f"{report['phone_purity']:.3f}", f"{report['phone_pnmi']:.3f}"]
    for r in rows[1:]:
        assert 0.0 < float(r.split(" | ")[3]) <= 1.0
