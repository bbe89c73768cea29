"""DeeBERT early exit (speechssl/text/early_exit.py, mode=early_exit)."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.text.early_exit import EarlyExitBERT, exit_curve, train_stage

OPTS = {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "ff_size": 64, "dropout": 0.0}


@pytest.fixture(scope="module")
def setup(tiny_corpus, tmp_path_factory):
    from speechssl.text.data import text_items
    from speechssl.upstream import build_upstream

    torch.manual_seed(0)
    bert = build_upstream("bert", **OPTS)
    bert.prepare(tiny_corpus, tmp_path_factory.mktemp("bert"), "cpu")
    items = text_items(tiny_corpus, "text-sst2", "train")[:64]
    labels = sorted({it["label"] for it in items})
    data = [(torch.tensor(bert.encode_ids(it)), labels.index(it["label"])) for it in items]
    return EarlyExitBERT(bert, len(labels)), data, bert.pad_id


def test_stage_two_leaves_the_upstream_and_the_last_off_ramp_untouched(setup):
    model, data, pad = setup
    train_stage(model, 1, data, 3, 1e-3, 8, 0, pad)
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith("bert.") or k.startswith(f"ramps.ramps.{model.num_layers - 1}.")}
    other = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("ramps.ramps.0.")}
    train_stage(model, 2, data, 3, 1e-2, 8, 0, pad)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(not torch.equal(state[k], v) for k, v in other.items())


def test_thresholds_decide_where_a_sentence_leaves(setup):
    model, data, _ = setup
    model.eval()
    test = data[:12]
    with torch.no_grad():
        first = [int(model.all_logits(i[None], torch.tensor([len(i)]))[0].argmax()) for i, _ in test]
        last = [int(model.all_logits(i[None], torch.tensor([len(i)]))[-1].argmax()) for i, _ in test]
    for threshold, layers, expected in ((0.0, 1, first), (1.01, model.num_layers, last)):
        got = [model.exit_predict(i[None], torch.tensor([len(i)]), threshold) for i, _ in test]
        assert [g[1] for g in got] == [layers] * len(test)
        assert [g[0] for g in got] == expected
    curve = exit_curve(model, test, [0.0, 0.6, 0.9])
    assert [r["avg_layers"] for r in curve] == sorted(r["avg_layers"] for r in curve)
    assert curve[0]["avg_layers"] == 1 and curve[-1]["avg_layers"] == model.num_layers
    assert curve[-1]["threshold"] == "all layers" and curve[-1]["time_saved"] == 0.0


def test_early_exit_mode_end_to_end(make_cfg, tmp_path):
    from speechssl.text.early_exit import run_early_exit

    cfg = make_cfg("mode=early_exit", "upstream=bert", "downstream=sst2",
                   *[f"upstream.{k}={v}" for k, v in OPTS.items()], "upstream.pretrain.steps=10",
                   "early_exit.steps=5", "early_exit.test_items=10",
                   "early_exit.thresholds=[0.6,0.9]")
    result = run_early_exit(cfg)
    assert [r["threshold"] for r in result["curve"]] == [0.6, 0.9, "all layers"]
    written = list((tmp_path / "outputs" / "early_exit").glob("bert-*-sst2.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["test_items"] == 10
