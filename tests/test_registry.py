"""One registry mechanism (speechssl/registry.py) and what rests on it: every kind is found
by name, recipes hold only what differs from the class defaults, and config validation
builds no model (it reads signatures and declared metadata)."""

from __future__ import annotations

import json

import pytest
import yaml

from speechssl.config import RECIPES, class_defaults
from speechssl.errors import ConfigError
from speechssl.registry import Registry


def test_registry_finds_registers_and_names_the_valid_choices():
    things = Registry("widget")

    @things.register("b")
    class B:
        pass

    things.add("a", len)
    assert things.get("b") is B and B.name == "b" and things.get("a") is len
    assert things.names() == ["b", "a"]  # registration order
    assert "a" in things and "c" not in things and things.find("c") is None
    with pytest.raises(ConfigError, match=r"widget='c'; valid: b, a"):
        things.get("c")
    with pytest.raises(ValueError, match="already registered"):
        things.add("a", max)


def test_every_kind_is_registered_by_its_own_module():
    from downstream.base import TASKS
    from speechssl.data.corpora import READERS
    from speechssl.modes import MODES
    from speechssl.tuning import TUNING
    from speechssl.upstream.base import UPSTREAMS

    assert {"fbank", "apc", "tera", "wav2vec2", "hubert", "bert", "hf"} <= set(UPSTREAMS.names())
    assert {"pr", "asr", "ks", "sid", "sst2", "qa"} <= set(TASKS.names())
    assert {"librispeech", "speech_commands", "glue", "squad", "conllu"} <= set(READERS.names())
    assert TUNING.names() == ["frozen", "full", "scratch", "adapter", "lora", "prefix", "prompt"]
    assert MODES.names() == ["train", "evaluate", "pretrain", "synth", "export", "leaderboard",
                             "compare", "fewshot", "early_exit", "prompt_finetune"]
    # a recipe for every registered upstream and task
    for name in UPSTREAMS.names():
        assert (RECIPES / "upstream" / f"{name}.yaml").is_file(), name
    for name in TASKS.names():
        assert (RECIPES / "downstream" / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("group", ["upstream", "downstream"])
def test_recipes_hold_only_what_differs_from_the_class(group):
    from downstream.base import TASKS
    from speechssl.upstream.base import UPSTREAMS

    registry = UPSTREAMS if group == "upstream" else TASKS
    for path in sorted((RECIPES / group).glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        if recipe["name"] not in registry:  # upstream=plugin: the class is the user's
            continue
        assert recipe["defaults"][0] == f"/{group}_defaults/{recipe['name']}@_here_", path
        defaults = class_defaults(registry.get(recipe["name"]))
        restated = [k for k, v in recipe.items() if k in defaults and defaults[k] == v]
        assert not restated, f"{path.name} restates class defaults: {restated}"


def test_composed_config_holds_every_class_option(make_cfg):
    from speechssl.upstream.base import upstream_class

    cfg = make_cfg("upstream=wav2vec2", "upstream.dropout=0.2")
    options = class_defaults(upstream_class("wav2vec2"))
    assert set(options) <= set(cfg.upstream)
    assert cfg.upstream.dropout == 0.2 and cfg.upstream.conv_dim == 128  # override; recipe
    assert cfg.upstream.conv_pos_kernel == options["conv_pos_kernel"]    # class default


def test_declared_tuning_modes_match_the_built_models():
    from speechssl.tuning import supported_modes
    from speechssl.upstream.base import UPSTREAMS, build_upstream

    for name in UPSTREAMS.names():
        if name in ("hf", "torchaudio"):  # they need model files: see test_validation_...
            continue
        cls = UPSTREAMS.get(name)
        assert supported_modes(build_upstream(name)) == cls.tuning_modes, name


def test_validation_reads_no_weights(make_cfg, tmp_path):
    """check_values checks an hf upstream from its config.json alone: a directory without
    any weight file passes validation (building it would fail)."""
    pytest.importorskip("transformers")
    from speechssl.config import check_values
    from speechssl.upstream.base import build_upstream

    root = tmp_path / "hf"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "bert"}))
    check_values(make_cfg("upstream=hf", f"upstream.path={root}", "downstream=sst2"))
    with pytest.raises(Exception):  # noqa: B017 (whatever transformers raises for no weights)
        build_upstream("hf", path=str(root))
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        check_values(make_cfg("upstream=hf", f"upstream.path={root}", "downstream=sst2"))
    with pytest.raises(ConfigError, match="upstream.vocab_size=8: too small"):
        check_values(make_cfg("upstream=bert", "upstream.vocab_size=8", "downstream=sst2"))
