"""protocol=paper (issue 24): s3prl's SUPERB settings per task from recipes/preset/,
applied over the task's CPU recipe, under the user's own overrides, with the lr search on."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from speechssl.config import RECIPES, check_values
from speechssl.errors import ConfigError

TASKS = ["pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "asv", "sd"]


def cfg_of(*overrides):
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        return compose("config", overrides=["corpus.size=tiny", *overrides])


def test_every_superb_task_has_a_checked_paper_preset():
    for task in TASKS:
        cfg = cfg_of("protocol=paper", f"downstream={task}")
        check_values(cfg)
        assert cfg.protocol == "paper" and cfg.lr_search is True
        if task != "qbe":  # s3prl clips every probe's gradient norm at 1
            assert cfg.downstream.optim.grad_clip == 1.0 and cfg.downstream.optim.lr_decay == 1.0
    with pytest.raises(ConfigError, match="protocol=paper has no preset for downstream=sst2"):
        check_values(cfg_of("protocol=paper", "downstream=sst2", "upstream=bert"))


def test_the_preset_sits_between_the_recipe_and_the_command_line():
    cpu, paper = cfg_of("downstream=ks"), cfg_of("protocol=paper", "downstream=ks")
    assert cpu.protocol == "cpu" and cpu.lr_search is False
    assert cpu.downstream.projector_dim is None and not cpu.downstream.optim.class_balanced
    assert paper.downstream.projector_dim == 256 and paper.downstream.optim.class_balanced
    assert paper.downstream.optim.lr == 1.0e-4 and paper.downstream.optim.max_steps == 200000
    assert paper.downstream.optim.batch_utterances == 32
    assert paper.downstream.featurizer == cpu.downstream.featurizer  # the rest: the recipe's
    mine = cfg_of("protocol=paper", "downstream=ks", "downstream.optim.lr=0.5", "lr_search=false")
    assert mine.downstream.optim.lr == 0.5 and mine.lr_search is False
    sid = cfg_of("protocol=paper", "downstream=sid").downstream
    assert (sid.optim.batch_seconds, sid.optim.accumulate, sid.train_crop_seconds) == (80, 4, 8.0)
    asr = cfg_of("protocol=paper", "downstream=asr").downstream
    assert (asr.hidden_size, asr.proj_dim, asr.downsample) == (1024, 1024, 1)
    asv = cfg_of("protocol=paper", "downstream=asv").downstream
    assert (asv.hidden_dim, asv.pool_dim, asv.embed_dim, asv.am_scale, asv.am_margin) == \
        (512, 1500, 512, 30.0, 0.4)


def test_a_paper_cell_runs_with_cut_budgets(make_cfg):
    from speechssl.train import train_cell

    row = train_cell(make_cfg("protocol=paper", "downstream=ks", "upstream=fbank",
                              "lr_search=false", "downstream.optim.max_steps=4",
                              "downstream.optim.eval_every=2"))
    assert 0.0 <= row["test_value"] <= 100.0
    assert "projector_dim: 256" in row["config_yaml"] and "class_balanced: true" in row["config_yaml"]
