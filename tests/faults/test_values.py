"""No silent wrong results (issue 20, parts 2 and 3).

Part 3: every bad config value stops before any work, in one line naming the key and the
valid range (speechssl/schema.py, speechssl/config.py ``check_values``), exit status 2, no
traceback, nothing recorded. Each case goes through the command line's entry point (two of
them through a ``python run.py`` process, the others through speechssl.cli.cli in-process).

Part 2: an upstream whose outputs are not a result (NaN, layers of different widths, lengths
in samples, frames off its downsample rate, a constant layer, fp16 overflow) stops on the
first batch of an extraction or of a probe that runs it, with one line naming the upstream;
a cache whose extraction hits the check is never marked complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from speechssl.checkpoint import save_weights
from speechssl.config import RECIPES, check_overrides, check_values
from speechssl.errors import ConfigError
from speechssl.features import (
    LiveLayers,
    UpstreamOutputError,
    cached_features,
    extract_features,
)
from speechssl.upstream.base import Upstream, UpstreamOutput, build_upstream

ROOT = Path(__file__).resolve().parents[2]

# id -> (overrides, the exact stderr line); {file}: an existing file, {ckpt}: an apc
# checkpoint with hidden_size=64 num_layers=2, {missing}: a path that does not exist,
# {dir}: an existing directory
CASES = {
    "seed-abc": (["seed=abc"], "seed='abc': must be an integer >= 0"),
    "seed-float": (["seed=1.5"], "seed=1.5: must be an integer >= 0"),
    "lr-negative": (["downstream.optim.lr=-1"], "downstream.optim.lr=-1: must be a number > 0"),
    "lr-text": (["downstream.optim.lr=abc"], "downstream.optim.lr='abc': must be a number > 0"),
    "pretrain-lr": (["upstream=apc", "upstream.pretrain.lr=-1"],
                    "upstream.pretrain.lr=-1: must be a number > 0"),
    "eval-every": (["downstream.optim.eval_every=0"],
                   "downstream.optim.eval_every=0: must be an integer >= 1 (steps between dev "
                   "evaluations)"),
    "max-steps": (["downstream.optim.max_steps=0"],
                  "downstream.optim.max_steps=0: must be an integer >= 1"),
    "patience": (["downstream.optim.patience=0"],
                 "downstream.optim.patience=0: must be an integer >= 1 (dev evaluations without "
                 "a gain of more than 0.5 % (relative) before the run stops)"),
    "lr-decay": (["downstream.optim.lr_decay=1.5"],
                 "downstream.optim.lr_decay=1.5: must be a number in (0, 1] (the factor on "
                 "the learning rate at a dev plateau; 1.0 = constant)"),
    "batch-seconds": (["downstream.optim.batch_seconds=0"],
                      "downstream.optim.batch_seconds=0: must be a number > 0 (padded seconds "
                      "of audio per probe batch)"),
    "batch-frames-removed": (["++downstream.optim.batch_frames=3200"],
                             "downstream.optim.batch_frames=3200: no more: probe batches count "
                             "audio, not upstream frames; set downstream.optim.batch_seconds "
                             "(audio tasks: frames x 0.01 for a 10 ms upstream) or "
                             "downstream.optim.batch_tokens (text tasks)"),
    "pretrain-fbank": (["mode=pretrain", "upstream=fbank"],
                       "upstream=fbank has nothing to pre-train (no pretrain_loss): "
                       "mode=pretrain is for self-supervised upstreams"),
    "lr-grid": (["downstream.optim.lr_grid=[0.001,-1]"],
                "downstream.optim.lr_grid=[0.001, -1]: must be a non-empty list of numbers > 0 "
                "(the learning rates lr_search=true tries)"),
    "grad-clip": (["downstream.optim.grad_clip=-1"],
                  "downstream.optim.grad_clip=-1: must be a number > 0 (the gradient-norm clip)"),
    "num-threads": (["num_threads=-3"],
                    "num_threads=-3: must be an integer >= 0 (0 = one per core)"),
    "layer-fbank": (["downstream.featurizer.layer=99"],
                    "downstream.featurizer.layer=99: upstream 'fbank' has 1 layer; must be in "
                    "[-1, 0] (-1 = the last; null = a learned weighted sum of all layers)"),
    "layer-apc": (["upstream=apc", "downstream.featurizer.layer=-4"],
                  "downstream.featurizer.layer=-4: upstream 'apc' has 3 layers; must be in "
                  "[-3, 2] (-1 = the last; null = a learned weighted sum of all layers)"),
    "upstream-bool": (["upstream.normalize=maybe"],
                      "upstream.normalize='maybe': must be true or false (upstream 'fbank' "
                      "declares normalize: bool)"),
    "data-dir-file": (["data_dir={file}"],
                      "data_dir='{file}': {file} is a file; must be a directory path"),
    "out-dir-under-file": (["out_dir={file}/out"],
                           "out_dir='{file}/out': {file} is a file; must be a directory path"),
    "downstream-unknown": (["downstream=nope"],
                           "downstream=nope: no such downstream (recipes/downstream/nope.yaml); "
                           "valid choices: asr, asv, er, ic, ks, nli, pos, pr, qa, qbe, sd, sf, "
                           "sid, sst2"),
    "suite-unknown": (["suite=nope", "downstream=ks"],
                      "suite=nope: no such suite (recipes/suite/nope.yaml); valid choices: "
                      "quick, superb"),
    # a train run without downstream= runs the suite's tasks: speechssl/cli.py expand_suite
    # reads the suite first (speechssl/score.py load_suite)
    "suite-unknown-alone": (["suite=nope"],
                            f"suite=nope: no such suite file {RECIPES}/suite/nope.yaml; "
                            "valid choices: quick, superb"),
    "corpus-unknown": (["corpus=nope"],
                       "corpus=nope: no such corpus (recipes/corpus/nope.yaml); valid choices: "
                       "conllu, fluent_speech_commands, glue, iemocap, librimix, librispeech, "
                       "quesst14, snips, speech_commands, squad, synth, voxceleb1"),
    "ckpt-other-size": (["upstream=apc", "upstream.ckpt={ckpt}"],
                        "upstream.ckpt={ckpt}: tensor 'rnns.0.weight_ih_l0' is [192, 80] in the "
                        "checkpoint but [1536, 80] in upstream 'apc' as configured; it was saved "
                        "with upstream.hidden_size=64 upstream.num_layers=2"),
}

# more bad values, checked in process by check_overrides (what the CLI runs first)
IN_PROCESS = {
    "pretrain-grad-clip": (["upstream=apc", "upstream.pretrain.grad_clip=0"],
                           "upstream.pretrain.grad_clip=0: must be a number > 0 (the "
                           "gradient-norm clip)"),
    "train-items": (["downstream.train_items=0"],
                    "downstream.train_items=0: must be null (every training item) or an "
                    "integer >= 1"),
    "ckpt-missing": (["upstream=apc", "upstream.ckpt={missing}"],
                     "upstream.ckpt={missing}: no such file; must be a safetensors checkpoint "
                     "(mode=pretrain or mode=export writes one)"),
    "seed-bool": (["seed=true"], "seed=true: must be an integer >= 0"),
    "lr-nan": (["downstream.optim.lr=nan"], "downstream.optim.lr=nan: must be a number > 0"),
    "pretrain-decay": (["upstream=apc", "upstream.pretrain.decay=exp"],
                       "upstream.pretrain.decay='exp'; valid values: constant, linear, cosine"),
    "cache-budget": (["cache_budget_gb=-1"],
                     "cache_budget_gb=-1: must be a number >= 0 (0 = never cache)"),
    "cache-bool": (["cache=maybe"], "cache='maybe': must be true or false"),
    "precision": (["precision=fp16"], "precision='fp16'; valid values: fp32, bf16"),
    "corpus-seed": (["corpus.seed=-1"], "corpus.seed=-1: must be an integer >= 0"),
    "upstream-int": (["upstream=apc", "upstream.hidden_size=1.5"],
                     "upstream.hidden_size=1.5: must be an integer (upstream 'apc' declares "
                     "hidden_size: int)"),
    "task-option": (["downstream=er", "downstream.fold=x"],
                    "downstream.fold='x': must be null or an integer (downstream 'er' declares "
                    "fold: int | None)"),
    "mode-unknown": (["mode=fly"],
                     "mode='fly'; valid modes: train, evaluate, pretrain, synth, export, "
                     "leaderboard, compare, fewshot, early_exit, prompt_finetune"),
    "layer-float": (["downstream.featurizer.layer=1.5"],
                    "downstream.featurizer.layer=1.5: must be null (a learned weighted sum of all "
                    "layers) or an integer (a layer index; -1 = the last)"),
    "weight-decay": (["downstream.optim.weight_decay=-0.1"],
                     "downstream.optim.weight_decay=-0.1: must be a number >= 0"),
    "extract-seconds": (["downstream.optim.extract_batch_seconds=0"],
                        "downstream.optim.extract_batch_seconds=0: must be a number > 0"),
    "pretrain-steps": (["upstream=apc", "upstream.pretrain.steps=0"],
                       "upstream.pretrain.steps=0: must be an integer >= 1"),
    "constructor-refuses": (["upstream=vq_apc", "upstream.temperature=[1.0,2.0]"],
                            "upstream 'vq_apc' refuses its options: ValueError: not enough values "
                            "to unpack (expected 3, got 2)"),
    "batch-seconds": (["upstream=apc", "upstream.pretrain.batch_seconds=0"],
                      "upstream.pretrain.batch_seconds=0: must be a number > 0 (padded audio "
                      "seconds per batch)"),
    "warmup": (["upstream=apc", "upstream.pretrain.warmup_steps=-1"],
               "upstream.pretrain.warmup_steps=-1: must be an integer >= 0"),
    "num-workers": (["num_workers=-1"], "num_workers=-1: must be an integer >= 0 (DataLoader "
                                        "workers; 0 = read in the main process)"),
    "dev-fraction": (["corpus=glue", "corpus.dev_fraction=1"],
                     "corpus.dev_fraction=1: must be a number in (0, 1)"),
    "leaderboard-dir": (["leaderboard={dir}"],
                        "leaderboard='{dir}': {dir} is a directory; must be a file path"),
    "tuple-option": (["upstream=vq_apc", "upstream.temperature=2.0"],
                     "upstream.temperature=2.0: must be a list of 3 numbers or a list of numbers "
                     "(upstream 'vq_apc' declares temperature: tuple[float, float, float] | "
                     "list[float])"),
}


def apc_checkpoint(path: Path) -> Path:
    """An apc checkpoint at another size than the recipe's, with pre-training's metadata."""
    options = {"hidden_size": 64, "num_layers": 2}
    model = build_upstream("apc", **options)
    save_weights(path, model, {"upstream": "apc", "options": json.dumps(options)})
    return path


# these cases go through a real `python run.py` process; the others call the same entry
# point (speechssl.cli.cli) in this process: one interpreter start per case was most of
# this file's time
THROUGH_A_PROCESS = ("seed-abc", "ckpt-other-size")


def run_cli(case: str, tmp_path: Path, capsys, monkeypatch) -> tuple[int, str, Path, Path, str]:
    """CASES[case] through the command line: (exit code, stderr, out_dir, data_dir, the
    expected line)."""
    names = {"file": str(tmp_path / "a-file"),
             "ckpt": str(apc_checkpoint(tmp_path / "apc64.safetensors"))}
    Path(names["file"]).write_text("not a directory\n")
    overrides, line = CASES[case]
    out, data = tmp_path / "out", tmp_path / "data"
    args = [f"out_dir={out}", f"data_dir={data}", "device=cpu",
            *(o.format(**names) for o in overrides)]
    if case in THROUGH_A_PROCESS:
        proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
        code, stderr = proc.returncode, proc.stderr
    else:
        from speechssl.cli import cli

        monkeypatch.setattr(sys, "argv", [str(ROOT / "run.py"), *args])
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
        capsys.readouterr()
        try:
            cli()
            code = 0
        except SystemExit as e:
            code = e.code
        stderr = capsys.readouterr().err
    return code, stderr, out, data, "error: " + line.format(**names)


@pytest.mark.parametrize("case", list(IN_PROCESS))
def test_more_bad_values_name_the_key_and_range(tmp_path, case):
    overrides, line = IN_PROCESS[case]
    names = {"dir": str(tmp_path), "missing": str(tmp_path / "none.safetensors")}
    with pytest.raises(ConfigError) as err:
        check_overrides([f"out_dir={tmp_path / 'out'}", f"data_dir={tmp_path / 'data'}",
                         "device=cpu", *(o.format(**names) for o in overrides)])
    assert str(err.value) == line.format(**names)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_stops_before_any_work(case, tmp_path, capsys, monkeypatch):
    code, stderr, out, data, line = run_cli(case, tmp_path, capsys, monkeypatch)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [line]
    # nothing recorded, nothing started: no leaderboard, no runs, not even a directory
    assert not (out / "leaderboard.sqlite").exists() and not (out / "runs").exists()
    assert not out.exists() and not data.exists()


def test_shipped_and_boundary_values_pass(make_cfg, tmp_path):
    """The schema refuses no shipped recipe value (QbE's recipe holds zeros in optim, which
    a task that trains nothing never reads) and accepts the ends of each range."""
    for task in sorted(p.stem for p in (RECIPES / "downstream").glob("*.yaml")):
        text = task in ("nli", "pos", "qa", "sst2")
        check_values(make_cfg("upstream=bert" if text else "upstream=fbank", f"downstream={task}"))
    for up in sorted(p.stem for p in (RECIPES / "upstream").glob("*.yaml")):
        if up in ("hf", "torchaudio", "plugin"):  # they name files or classes of their own
            continue
        text = up in ("bert", "gpt")
        check_values(make_cfg(f"upstream={up}", "downstream=sst2" if text else "downstream=ks",
                              "downstream.featurizer.layer=-1"))
    check_values(make_cfg("upstream=apc", "downstream.featurizer.layer=2", "seed=0",
                          "num_threads=0", "cache_budget_gb=0", "downstream.optim.lr=1e-9",
                          "downstream.optim.weight_decay=0", "upstream.pretrain.warmup_steps=0",
                          "downstream.optim.max_steps=1", "downstream.optim.patience=1",
                          "upstream.pretrain.decay=cosine", "upstream.residual=false"))


def test_checkpoint_of_the_configured_size_passes(make_cfg, tmp_path):
    """A checkpoint whose tensors fit passes validation; a buffer that holds data (BERT's
    tokenizer, of any length) is not compared by shape."""
    ckpt = apc_checkpoint(tmp_path / "apc64.safetensors")
    check_values(make_cfg("upstream=apc", f"upstream.ckpt={ckpt}", "upstream.hidden_size=64",
                          "upstream.num_layers=2"))
    bert = build_upstream("bert", hidden_size=32, num_layers=2, num_heads=2, ff_size=64)
    bert.tokenizer_json = torch.arange(100, dtype=torch.uint8)  # a trained tokenizer's bytes
    save_weights(tmp_path / "bert.safetensors", bert, {"upstream": "bert"})
    check_values(make_cfg("upstream=bert", "downstream=sst2", "upstream.hidden_size=32",
                          "upstream.num_layers=2", "upstream.num_heads=2", "upstream.ff_size=64",
                          f"upstream.ckpt={tmp_path / 'bert.safetensors'}"))
    with pytest.raises(ConfigError, match=r"tensor 'rnns.0.weight_ih_l0' is \[192, 80\]"):
        check_values(make_cfg("upstream=apc", f"upstream.ckpt={ckpt}"))


# ------------------------------------------------------------------ part 2: upstream outputs


class Faulty(Upstream):
    """Three layers (B, T, 4) of the waveform itself, T = samples // 160, unless ``fault``:
    nan, width, samples (lengths in samples), rate (frames at twice the declared rate),
    constant (a dead layer), huge (beyond float16)."""

    name = "faulty"
    downsample_rate = 160

    def __init__(self, fault: str | None = None):
        super().__init__()
        self.fault = fault
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, lengths):
        rate = 320 if self.fault == "rate" else 160
        frames = lengths // rate
        T = int(frames.max())
        base = x[:, : T * rate].reshape(x.shape[0], T, rate)[..., :4] * self.scale
        layers = [base, base * 2, base + 1]
        if self.fault == "nan":
            layers[1] = layers[1].clone()
            layers[1][0, 0, 0] = math.nan
        elif self.fault == "width":
            layers[2] = torch.cat([layers[2], layers[2]], dim=-1)
        elif self.fault == "constant":
            layers[2] = torch.ones_like(base)
        elif self.fault == "huge":
            layers[0] = (base.abs() + 1) * 1e6
        return UpstreamOutput(layers, lengths if self.fault == "samples" else frames)


FAULTS = {
    "nan": "layer 1 has 1 NaN/Inf values in 120 frames of the first batch",
    "width": "layers differ in width: layer 0 has D=4, layer 2 has D=8; every layer must have "
             "one width D",
    "samples": "max(lengths)=8000 but the hidden states have T=50 frames (the input's length "
               "in samples: lengths must count frames, not samples); max(lengths) must equal T",
    "rate": "25 frames for an input of 8000 samples, not about 50 at its downsample_rate=160 "
            "(input samples per frame): declare the rate its frames have",
    "constant": "layer 2 is constant: all 120 frames of the first batch have the same features "
                "(a dead layer)",
    "huge": "layer 0 has 480 NaN/Inf values in a batch of the float16 features (NaN, or |x| "
            "beyond float16's 65504)",
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[dict]:
    """Three clips of 0.5, 0.4 and 0.3 s (50, 40 and 30 frames at 160 samples a frame)."""
    root = tmp_path_factory.mktemp("clips")
    items = []
    for i, seconds in enumerate((0.5, 0.4, 0.3)):
        x = np.random.default_rng(i).uniform(-0.5, 0.5, int(seconds * 16000)).astype(np.float32)
        sf.write(root / f"c{i}.wav", x, 16000, subtype="PCM_16")
        items.append({"id": f"c{i}", "path": str(root / f"c{i}.wav"), "duration": seconds})
    return items


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_outputs_stop_the_extraction_and_leave_no_cache(clips, tmp_path, fault):
    cpu = torch.device("cpu")
    line = f"upstream 'faulty': {FAULTS[fault]}"
    with pytest.raises(UpstreamOutputError) as err:
        extract_features(Faulty(fault), [dict(it) for it in clips], cpu, progress=False)
    assert str(err.value) == line
    root = tmp_path / "features"
    with pytest.raises(UpstreamOutputError) as err:
        cached_features(Faulty(fault), [dict(it) for it in clips], cpu, key={"upstream": "faulty"},
                        root=root, budget_gb=1.0, batch_seconds=10.0, progress=False)
    assert str(err.value) == line
    assert not list(root.rglob("manifest.json")), "a cache that failed its check is complete"
    # a probe that runs the upstream itself (cache=false, a tuned upstream) checks the same
    for trainable in (False, True):
        live = LiveLayers(Faulty(fault), [dict(it) for it in clips], cpu, trainable=trainable)
        (_, batch), = live.batches([[0, 1, 2]])
        if fault == "huge" and trainable:  # a tuned upstream's features are not rounded
            live(batch)
            continue
        with pytest.raises(UpstreamOutputError) as err:
            live(batch)
        assert str(err.value) == line


def test_good_outputs_pass_and_are_cached(clips, tmp_path):
    cpu = torch.device("cpu")
    feats = cached_features(Faulty(), [dict(it) for it in clips], cpu, key={"upstream": "ok"},
                            root=tmp_path, budget_gb=1.0, batch_seconds=10.0, progress=False)
    assert [tuple(f.shape) for f in feats] == [(3, 50, 4), (3, 40, 4), (3, 30, 4)]
    assert len(list(tmp_path.rglob("manifest.json"))) == 1


PLUGIN = '''
import math
from speechssl.upstream.base import Upstream, UpstreamOutput


class NaNs(Upstream):
    """fbank-like frames, all NaN: the upstream of issue 20's 100 % NaN cache."""

    def forward(self, x, lengths):
        frames = lengths // 160
        h = x.new_full((x.shape[0], int(frames.max()), 8), math.nan)
        return UpstreamOutput([h, h], frames)
'''


def test_nan_upstream_records_nothing(data_dir, tmp_path):
    """The run of issue 20: an upstream of NaN features stopped at its first batch, in one
    line, exit status 2: no cache marked complete, no leaderboard row."""
    (tmp_path / "nan_upstream.py").write_text(PLUGIN)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "run.py", "upstream=nan_upstream:NaNs",
                           "downstream=ks", f"data_dir={data_dir}", f"out_dir={out}",
                           "corpus.size=tiny", "device=cpu", "progress=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: upstream 'nan_upstream:NaNs': layer 0 has (\d+) NaN/Inf values "
                        r"in \d+ frames of the first batch", proc.stderr.strip().splitlines()[-1])
    assert not (out / "leaderboard.sqlite").exists()
    assert not list(out.rglob("result.json")) and not list(out.rglob("manifest.json"))
