"""Discrete BERT on vq-wav2vec units (speechssl/upstream/discrete_bert.py)."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.checkpoint import save_weights
from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream

UNITS = {"hidden_size": 32, "context_layers": 2, "num_codes": 16}
BERT = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64, "unit_space": 256,
        "dropout": 0.0}


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("units") / "vq.safetensors"
    save_weights(path, build_upstream("vq_wav2vec", **UNITS),
                 {"upstream": "vq_wav2vec", "options": json.dumps(UNITS)})
    return str(path)


def test_tokens_are_the_unit_models_code_pairs(units, clips):
    up = build_upstream("discrete_bert", units=units, **BERT)
    codes, n = up.unit_model().codes(*clips)
    ids, m = up.tokens(*clips)
    assert torch.equal(n, m) and ids.shape == codes.shape[:2]
    assert torch.equal(ids, codes[..., 0] + 16 * codes[..., 1] + 3)  # specials first
    out = up(*clips)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape[:2] == ids.shape


def test_masked_prediction_learns(units, clips):
    """Measured: masked accuracy 0.0 -> above 0.5 in 60 updates on four clips."""
    torch.manual_seed(0)
    up = build_upstream("discrete_bert", units=units, **BERT).train()
    opt = torch.optim.Adam(up.parameters(), lr=3e-3)
    logs = []
    for _ in range(60):
        out = up.pretrain_loss(*clips)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        logs.append({k: float(v) for k, v in out.items()})
    assert 0.0 < logs[0]["masked_fraction"] < 0.8
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"], (logs[0], logs[-1])
    assert sum(x["masked_accuracy"] for x in logs[-5:]) / 5 > 0.3
    assert all(p.grad is None for p in up.unit_model().parameters())


def test_a_counted_vocabulary_keeps_the_frequent_units(units, tiny_corpus, capsys):
    up = build_upstream("discrete_bert", units=units, **{**BERT, "vocab_size": 8})
    with pytest.raises(ConfigError, match="no unit vocabulary"):
        up.tokens(torch.zeros(1, 16000), torch.tensor([16000]))
    up.prepare(tiny_corpus, None, "cpu")
    assert "[discrete_bert] vocabulary: " in capsys.readouterr().out
    table = up.unit_to_token
    assert sorted(table[table > 2].tolist()) == list(range(3, 3 + int((table > 2).sum())))
    assert int((table > 2).sum()) <= 5 and up.vocab_size == 8


def test_units_must_be_a_discrete_model(tmp_path):
    path = tmp_path / "apc.safetensors"
    opts = {"hidden_size": 16, "num_layers": 1}
    save_weights(path, build_upstream("apc", **opts), {"upstream": "apc", "options": json.dumps(opts)})
    with pytest.raises(ConfigError, match="codes"):
        build_upstream("discrete_bert", units=str(path), **BERT).unit_model()
    with pytest.raises(ConfigError, match="upstream.units"):
        build_upstream("discrete_bert", **BERT).unit_model()


def test_a_cells_identity_covers_the_unit_models_bytes(units, make_cfg, tiny_corpus, tmp_path):
    """The same BERT weights read through another unit model give other features: its
    weights hash (the cell's and the feature cache's key) changes with the unit file's
    content, not with its name."""
    import shutil

    from speechssl.upstream.load import load_upstream

    bert = tmp_path / "bert.safetensors"
    opts = {**BERT, "units": units}
    save_weights(bert, build_upstream("discrete_bert", **opts),
                 {"upstream": "discrete_bert", "options": json.dumps(opts)})
    copy, other = tmp_path / "copy.safetensors", tmp_path / "other.safetensors"
    shutil.copy(units, copy)
    torch.manual_seed(1)
    save_weights(other, build_upstream("vq_wav2vec", **UNITS),
                 {"upstream": "vq_wav2vec", "options": json.dumps(UNITS)})

    def weights_hash(unit_file):
        cfg = make_cfg("upstream=discrete_bert", f"upstream.ckpt={bert}",
                       f"upstream.units={unit_file}", "upstream.vocab_size=0",
                       *(f"upstream.{k}={v}" for k, v in BERT.items()))
        return load_upstream(cfg, tiny_corpus, torch.device("cpu"))[1].weights_hash

    assert weights_hash(copy) == weights_hash(units) != weights_hash(other)
