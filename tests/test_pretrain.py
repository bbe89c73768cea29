"""Pre-training: checkpoints are safetensors, and an interrupted run resumes to the
same weights as an uninterrupted one."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from speechssl.data.corpus import Corpus
from speechssl.pretrain import pretrain
from speechssl.upstream.load import pretrain_dir

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


def test_run_directory_is_keyed_by_the_recipe_not_the_budget(make_cfg, tiny_corpus: Corpus, tmp_path):
    base = make_cfg(*SMALL, "upstream.pretrain.steps=2", f"out_dir={tmp_path}")
    longer = make_cfg(*SMALL, "upstream.pretrain.steps=5", "upstream.pretrain.log_every=3",
                      f"out_dir={tmp_path}")
    other_lr = make_cfg(*SMALL, "upstream.pretrain.steps=2", "upstream.pretrain.lr=0.01",
                        f"out_dir={tmp_path}")
    assert pretrain_dir(longer, tiny_corpus) == pretrain_dir(base, tiny_corpus)
    assert pretrain_dir(other_lr, tiny_corpus) != pretrain_dir(base, tiny_corpus)


def test_a_cell_asking_for_more_steps_pre_trains_on_and_fewer_is_an_error(
        make_cfg, tiny_corpus: Corpus, tmp_path):
    import pytest

    from speechssl.checkpoint import read_metadata
    from speechssl.errors import ConfigError
    from speechssl.upstream.load import load_upstream

    cpu = torch.device("cpu")
    short = make_cfg(*SMALL, "upstream.pretrain.steps=2", f"out_dir={tmp_path}")
    _, info_short = load_upstream(short, tiny_corpus, cpu)  # pre-trains 2 steps
    longer = make_cfg(*SMALL, "upstream.pretrain.steps=3", f"out_dir={tmp_path}")
    _, info_longer = load_upstream(longer, tiny_corpus, cpu)  # continues to 3
    assert info_longer.weights_hash != info_short.weights_hash
    assert read_metadata(info_longer.source)["steps"] == "3"
    with pytest.raises(ConfigError, match="pre-trained for 3 steps, more than"):
        load_upstream(short, tiny_corpus, cpu)
    with pytest.raises(ConfigError, match="pre-trained for 3 steps, more than"):
        pretrain(short, tiny_corpus, cpu)
