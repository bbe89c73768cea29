"""``precision=bf16``: the training steps of pre-training and probes run under
``torch.autocast`` (bfloat16 matmuls), parameters stay fp32; ``fp32`` changes nothing."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from speechssl.config import check_values
from speechssl.data.corpus import Corpus
from speechssl.errors import ConfigError
from speechssl.pretrain import pretrain
from speechssl.train import train_cell

MOCKINGJAY = ["upstream=mockingjay", "upstream.hidden_size=32", "upstream.num_heads=2",
              "upstream.ff_size=64", "upstream.num_layers=1", "upstream.pretrain.steps=2",
              "upstream.pretrain.batch_seconds=10", "upstream.pretrain.log_every=1"]


@pytest.fixture
def linear_dtypes():
    """dtypes of every nn.Linear output while the test runs, and whether a grad was on."""
    seen: set[tuple[torch.dtype, bool]] = set()

    def hook(module, args, out):
        if isinstance(module, nn.Linear) and isinstance(out, torch.Tensor):
            seen.add((out.dtype, torch.is_grad_enabled()))

    handle = nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


def test_bad_precision_is_a_config_error(make_cfg):
    with pytest.raises(ConfigError, match="precision='fp16'; valid values: fp32, bf16"):
        check_values(make_cfg("precision=fp16"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pretraining_step_runs_in_the_chosen_precision(make_cfg, tiny_corpus: Corpus, tmp_path,
                                                       linear_dtypes, precision):
    cfg = make_cfg(*MOCKINGJAY, f"precision={precision}", f"out_dir={tmp_path}")
    weights = load_file(pretrain(cfg, tiny_corpus, torch.device("cpu")))
    train_dtypes = {dt for dt, grad in linear_dtypes if grad}
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert train_dtypes == {want}
    assert not any(w.dtype == torch.bfloat16 for w in weights.values())  # fp32 master weights
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_probe_trains_under_bf16(make_cfg, linear_dtypes):
    cfg = make_cfg("upstream=fbank", "downstream=sid", "precision=bf16",
                   "downstream.optim.max_steps=30", "downstream.optim.eval_every=15")
    row = train_cell(cfg)
    assert torch.bfloat16 in {dt for dt, grad in linear_dtypes if grad}
    # dev and test are scored outside autocast, in fp32
    assert torch.float32 in {dt for dt, grad in linear_dtypes if not grad}
    assert math.isfinite(row["test_value"]) and row["test_value"] > 100 / 24  # 24 speakers


def test_lstm_runs_in_fp32_under_autocast():
    """oneDNN has no bf16 LSTM on CPUs without AVX512-BF16: ours casts its input up and
    gives exactly the fp32 result (nn.LSTM raises there)."""
    from speechssl.nn.rnn import LSTM

    torch.manual_seed(0)
    lstm, x = LSTM(8, 4, batch_first=True), torch.randn(2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = lstm(x.bfloat16())
    assert y.dtype == torch.float32
    assert torch.allclose(y, lstm(x.bfloat16().float())[0])


def test_cpc_lstm_context_pretrains_under_bf16(make_cfg, tiny_corpus: Corpus, tmp_path):
    cfg = make_cfg("upstream=cpc", "upstream.context=lstm", "upstream.pretrain.steps=2",
                   "upstream.pretrain.batch_seconds=10", "precision=bf16", f"out_dir={tmp_path}")
    weights = load_file(pretrain(cfg, tiny_corpus, torch.device("cpu")))
    assert all(torch.isfinite(w).all() for w in weights.values())
