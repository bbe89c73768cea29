"""Pre-training: checkpoints are safetensors, and an interrupted run resumes to the
same weights as an uninterrupted one."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from speechssl.data.corpus import Corpus
from speechssl.pretrain import pretrain, pretrain_dir

SMALL = ["upstream=apc", "upstream.hidden_size=32", "upstream.pretrain.batch_seconds=20",
         "upstream.pretrain.save_every=2", "upstream.pretrain.log_every=1"]


def test_resume_matches_uninterrupted_run(make_cfg, tiny_corpus: Corpus, tmp_path):
    full = make_cfg(*SMALL, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'a'}")
    weights_full = load_file(pretrain(full, tiny_corpus, torch.device("cpu")))

    # "interrupted" after 2 steps (its last checkpoint), then run again to 4 steps
    first = make_cfg(*SMALL, "upstream.pretrain.steps=2", f"out_dir={tmp_path / 'b'}")
    pretrain(first, tiny_corpus, torch.device("cpu"))
    state = json.loads((pretrain_dir(first, tiny_corpus) / "last" / "state.json").read_text())
    assert state["step"] == 2
    second = make_cfg(*SMALL, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'b'}")
    assert pretrain_dir(second, tiny_corpus) == pretrain_dir(first, tiny_corpus)
    weights_resumed = load_file(pretrain(second, tiny_corpus, torch.device("cpu")))

    assert weights_full.keys() == weights_resumed.keys()
    for k in weights_full:
        assert torch.equal(weights_full[k], weights_resumed[k]), k
    run = pretrain_dir(second, tiny_corpus)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["dev_loss"] > 0
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard scalars written"
