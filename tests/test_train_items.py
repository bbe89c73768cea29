"""``downstream.train_items=N``: a fixed, nested subset of the training split (low-resource
probing and fine-tuning; HuggingFace's ``max_train_samples``)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from speechssl.config import check_values
from speechssl.errors import ConfigError
from speechssl.train import prepare_cell, run_dir_for, train_cell, train_subset

BUDGET = ["downstream.optim.max_steps=20", "downstream.optim.eval_every=10"]


def items(n: int) -> list[dict]:
    return [{"id": f"utt-{i:04d}", "label": i % 3} for i in range(n)]


def test_subset_is_nested_in_manifest_order_and_independent_of_it():
    full = items(200)
    small, large = train_subset(full, 20), train_subset(full, 80)
    assert len(small) == 20 and len(large) == 80
    assert {it["id"] for it in small} < {it["id"] for it in large}  # nested
    assert [it["id"] for it in small] == sorted(it["id"] for it in small)  # manifest order kept
    shuffled = full[:]
    random.Random(3).shuffle(shuffled)
    # chosen by id alone: the same items whatever order the manifest lists them in
    assert {it["id"] for it in train_subset(shuffled, 20)} == {it["id"] for it in small}
    # not simply the first N of the manifest
    assert [it["id"] for it in small] != [it["id"] for it in full[:20]]


def test_none_or_more_than_the_split_keeps_every_item():
    full = items(10)
    assert train_subset(full, None) is full
    assert train_subset(full, 10) is full and train_subset(full, 50) is full


@pytest.mark.parametrize("bad", ["0", "-3", "2.5", "true", "many"])
def test_bad_values_are_config_errors(make_cfg, bad):
    cfg = make_cfg("upstream=fbank", "downstream=ks", f"downstream.train_items={bad}")
    with pytest.raises(ConfigError, match="downstream.train_items"):
        check_values(cfg)


def test_default_run_directory_is_unchanged_and_a_subset_is_its_own_cell(make_cfg):
    base = make_cfg("upstream=fbank", "downstream=ks")
    sub = make_cfg("upstream=fbank", "downstream=ks", "downstream.train_items=24")
    # a directory hashed without the key (as before the option existed) is the default's
    from omegaconf import OmegaConf, open_dict

    legacy = OmegaConf.create(OmegaConf.to_container(base))
    with open_dict(legacy):
        del legacy.downstream["train_items"]
    assert run_dir_for(base, "fbank", "ks", "c") == run_dir_for(legacy, "fbank", "ks", "c")
    assert run_dir_for(sub, "fbank", "ks", "c") != run_dir_for(base, "fbank", "ks", "c")


def test_a_cell_trains_on_the_subset_only(make_cfg, capsys):
    full = prepare_cell(make_cfg("upstream=fbank", "downstream=ks"))
    cfg = make_cfg("upstream=fbank", "downstream=ks", "downstream.train_items=24", *BUDGET)
    cell = prepare_cell(cfg)
    assert len(cell.splits["train"]) == 24 < len(full.splits["train"])
    assert [it["id"] for it in cell.splits["dev"]] == [it["id"] for it in full.splits["dev"]]
    assert [it["id"] for it in cell.splits["test"]] == [it["id"] for it in full.splits["test"]]
    capsys.readouterr()
    row = train_cell(cfg)
    assert f"using 24 of {len(full.splits['train'])} training items" in capsys.readouterr().out
    assert "train_items: 24" in (Path(row["run_dir"]) / "config.yaml").read_text()


def _row(value, run_id, down_yaml, tuning_mode="frozen"):
    return {"run_id": run_id, "upstream": "bert", "weights_hash": "abc", "task": "sst2",
            "corpus": "synth-tiny-seed0", "metric": "accuracy", "higher_is_better": 1,
            "dev_value": value, "test_value": value, "seed": 0, "wall_time_s": 1.0,
            "tuning": tuning_mode, "config_yaml": f"downstream: {down_yaml}\n"}


def test_a_low_resource_run_is_a_row_of_its_own_not_a_variant(tmp_path):
    from speechssl import report, store

    db = tmp_path / "lb.sqlite"
    store.record(db, _row(80.0, "a", "{name: sst2, train_items: null}"))
    store.record(db, _row(60.0, "b", "{name: sst2, train_items: 500}"))
    store.record(db, _row(70.0, "c", "{name: sst2, train_items: 500}", "full"))
    store.record(db, _row(90.0, "d", "{name: sst2}", "full"))  # a run from before the key
    table = report.markdown_table(store.rows(db))
    assert "| bert | 80.00 |" in table
    assert "| bert [500 train items] | 60.00 |" in table
    assert "| bert [full, 500 train items] | 70.00 |" in table
    assert "| bert [full] | 90.00 |" in table
    assert "best on dev" not in table
