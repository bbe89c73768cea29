"""Fail fast on a bad command line: check the overrides and the config values before
any work starts, and name the valid choices."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from speechssl.errors import ConfigError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MODES = ("train", "evaluate", "pretrain", "synth", "export", "leaderboard", "compare")


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
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; valid modes: {', '.join(MODES)}")
    if OmegaConf.is_missing(cfg.upstream, "name"):
        raise ConfigError("upstream.name is not set: name your class as "
                          "upstream=module.path:ClassName (docs/plug-in.md)")
    from speechssl.pretrain import build_from_config
    from speechssl.runtime import check_precision, precision_of, resolve_device
    from speechssl.train import task_from_config

    task = task_from_config(cfg.downstream)
    n = cfg.downstream.get("train_items")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"downstream.train_items must be null (every training item) or an "
                          f"integer >= 1, got {n!r}")
    upstream = build_from_config(cfg.upstream)
    check_tuning_config(cfg, task, upstream)
    resolve_device(cfg.device)
    check_precision(precision_of(cfg))
    check_suite_config(cfg)
    from speechssl.cache import check_cache_config

    check_cache_config(cfg)
    if cfg.corpus.name == "synth":
        from speechssl.data.synth import SIZES

        if cfg.corpus.size not in SIZES:
            raise ConfigError(f"corpus.size={cfg.corpus.size!r}; valid sizes: {', '.join(SIZES)}")


def check_tuning_config(cfg: DictConfig, task, upstream) -> None:
    """`tuning` (recipes/tuning/NAME.yaml): a known mode with valid options, that the
    upstream can host; mode=compare fine-tunes and trains from scratch."""
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
    from speechssl.leaderboard import check_suite

    suite = OmegaConf.to_container(cfg.suite, resolve=True)
    check_suite(suite, where=f"suite={suite.get('name') if isinstance(suite, dict) else suite}")
