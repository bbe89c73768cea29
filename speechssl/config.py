"""Fail fast on a bad command line: check the overrides and the config values before
any work starts, and name the valid choices."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from speechssl.errors import ConfigError

# the config groups: speechssl/recipes in an installed wheel (package data), else the
# top-level recipes/ of a source checkout (editable install, `python run.py`)
RECIPES = Path(__file__).resolve().parent / "recipes"
if not RECIPES.is_dir():
    RECIPES = RECIPES.parent.parent / "recipes"


def class_defaults(cls) -> dict:
    """The keyword defaults of ``cls.__init__`` as plain config values (tuples as lists)."""
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.default is inspect.Parameter.empty:
            continue
        out[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def store_class_defaults() -> None:
    """Each registered upstream's and task's constructor defaults as the configs
    ``upstream_defaults/<name>`` and ``downstream_defaults/<name>``, which their recipes
    (recipes/upstream/<name>.yaml, recipes/downstream/<name>.yaml) put first in their
    defaults list: a recipe holds only what differs from the class, yet every option shows
    in the composed config (``--cfg job``) and takes a plain ``upstream.KEY=VALUE`` override."""
    from hydra.core.config_store import ConfigStore

    from downstream.base import TASKS
    from speechssl.upstream.base import UPSTREAMS

    store = ConfigStore.instance()
    for group, registry in (("upstream_defaults", UPSTREAMS), ("downstream_defaults", TASKS)):
        for name in registry.names():
            store.store(group=group, name=name,
                        node={"name": name, **class_defaults(registry.get(name))})


# before any composition, in every process that imports the config module (the CLI, tests,
# benchmarks)
store_class_defaults()


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Replace each sweep (a=1,2 or a=range(...)) by its first value, for checking."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for ov in OverridesParser.create().parse_overrides(overrides):
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()))
            out.append(f"{ov.get_key_element()}={first}")
        else:
            out.append(ov.input_line)
    return out


def _valid_keys_message(cfg: DictConfig, full_key: str) -> str:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig):
        keys = ", ".join(str(k) for k in node.keys() if k != "hydra")
        return f"valid keys under '{parent or '<top level>'}': {keys}"
    return ""


def check_overrides(overrides: list[str]) -> None:
    """Compose the config with the user's overrides; raise ConfigError with the valid
    keys or choices if an override names nothing."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    user = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "--"))]
    try:
        user = _first_of_sweeps(user)
    except HydraException as e:
        raise ConfigError(f"cannot parse the command line: {e}") from None
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        try:
            cfg = compose("config", overrides=user)
        except HydraException as e:
            msg = str(e).split("\nConfig search path")[0]
            key = re.search(r"Could not override '([\w.]+)'", msg)
            if key:
                groups = [o for o in user if o.split("=")[0] in ("upstream", "downstream", "corpus", "suite",
                                                              "tuning")]
                base = compose("config", overrides=groups)
                raise ConfigError(f"unknown config key '{key.group(1)}'; "
                                  f"{_valid_keys_message(base, key.group(1))}") from None
            raise ConfigError(msg) from None
    check_values(cfg)


def check_values(cfg: DictConfig) -> None:
    """Values that no schema catches: mode, task/upstream options, device."""
    from speechssl.modes import MODES

    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; valid modes: {', '.join(MODES.names())}")
    if OmegaConf.is_missing(cfg.upstream, "name"):
        raise ConfigError("upstream.name is not set: name your class as "
                          "upstream=module.path:ClassName (docs/plug-in.md)")
    from downstream.base import task_from_config
    from speechssl.runtime import check_precision, precision_of, resolve_device
    from speechssl.upstream.base import check_upstream
    from speechssl.upstream.load import upstream_options

    task = task_from_config(cfg.downstream)
    n = cfg.downstream.get("train_items")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"downstream.train_items must be null (every training item) or an "
                          f"integer >= 1, got {n!r}")
    # the upstream's class and options, checked without building it (no weights are read)
    upstream = check_upstream(cfg.upstream.name, **upstream_options(cfg.upstream))
    check_tuning_config(cfg, task, upstream)
    resolve_device(cfg.device)
    check_precision(precision_of(cfg))
    check_suite_config(cfg)
    check_cache_config(cfg)
    if cfg.corpus.name == "synth":
        from speechssl.data.synth import SIZES

        if cfg.corpus.size not in SIZES:
            raise ConfigError(f"corpus.size={cfg.corpus.size!r}; valid sizes: {', '.join(SIZES)}")


def check_tuning_config(cfg: DictConfig, task, upstream: type) -> None:
    """`tuning` (recipes/tuning/NAME.yaml): a known mode with valid options, that the
    upstream class declares it can host; mode=compare fine-tunes and trains from scratch."""
    from speechssl import tuning

    tuning.check_tuning(cfg.get("tuning"))
    modes = ["full", "scratch"] if cfg.mode == "compare" else [tuning.mode_of(cfg)]
    for mode in modes:
        tuning.check_supported(upstream, cfg.upstream.name, mode)
        if mode != "frozen" and not task.trainable:
            raise ConfigError(f"downstream {task.name!r} trains no probe (it scores the frozen "
                              f"features), so tuning={mode} has nothing to train; use "
                              f"tuning=frozen" + (" (mode=compare needs a trained probe)"
                                                  if cfg.mode == "compare" else ""))


def check_suite_config(cfg: DictConfig) -> None:
    """`suite` (recipes/suite/NAME.yaml): task list and SUPERB reference points."""
    if cfg.get("suite") is None:
        raise ConfigError("suite is not set: name a suite (suite=superb) in recipes/suite/")
    from speechssl.score import check_suite

    suite = OmegaConf.to_container(cfg.suite, resolve=True)
    check_suite(suite, where=f"suite={suite.get('name') if isinstance(suite, dict) else suite}")


def check_cache_config(cfg) -> None:
    """ConfigError naming the key for a bad ``cache``, ``cache_dir`` or ``cache_budget_gb``."""
    on = cfg.get("cache", True)
    if not isinstance(on, bool):
        raise ConfigError(f"cache={on!r}: must be true or false")
    where = cfg.get("cache_dir")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise ConfigError(f"cache_dir={where!r}: must be a directory path")
    budget = cfg.get("cache_budget_gb", 20)
    if (isinstance(budget, bool) or not isinstance(budget, int | float)
            or not math.isfinite(budget) or budget < 0):
        raise ConfigError(f"cache_budget_gb={budget!r}: must be a number of GB >= 0 "
                          f"(0 = never cache; cache=false also turns the cache off)")
