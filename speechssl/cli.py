"""The command line: `python run.py upstream=apc downstream=asr` (see README.md), the same as
`python -m speechssl ...` and the installed `speechssl ...` command. Hydra composes the config
from the recipes (speechssl.config.RECIPES); `run` runs the registered `mode` (speechssl/modes.py)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from speechssl.config import RECIPES
from speechssl.errors import SpeechSSLError


@hydra.main(config_path=str(RECIPES), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from speechssl import distributed

    try:
        distributed.init(cfg.device)  # `torchrun --nproc_per_node=N run.py ...`: join the group
        run(cfg)
    except SpeechSSLError as e:  # bad input or config: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        distributed.cleanup()


def run(cfg: DictConfig) -> None:
    from speechssl.config import check_values
    from speechssl.modes import MODES
    from speechssl.runtime import seed_everything, set_threads

    check_values(cfg)
    set_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    MODES.get(cfg.mode)(cfg)


def expand_suite(argv: list[str], recipes) -> list[str]:
    """`suite=NAME` in a training run without `downstream=`: run every task of the suite
    that has a recipe, as a Hydra multirun (`-m downstream=t1,t2,...`, in the suite's
    ``run_order``), two cells at a time through recipes/hydra/launcher/parallel.yaml unless
    a ``hydra/launcher=`` is given; finished cells are skipped by the training loop
    (force=true redoes them)."""
    from pathlib import Path

    from speechssl.score import load_suite

    suite = [a.split("=", 1)[1] for a in argv if a.startswith("suite=")]
    if not suite or any(a.startswith(("downstream=", "+downstream=")) for a in argv):
        return argv
    if any(a.startswith("mode=") and a != "mode=train" for a in argv):
        return argv
    spec = load_suite(suite[-1])
    tasks = spec.get("run_order", spec["tasks"])
    have = [t for t in tasks if (Path(recipes) / "downstream" / f"{t}.yaml").is_file()]
    missing = [t for t in tasks if t not in have]
    if missing:
        print(f"[suite] {suite[-1]}: no recipe yet for {', '.join(missing)}; running "
              f"{', '.join(have)}", file=sys.stderr)
    if not have:
        from speechssl.errors import ConfigError

        raise ConfigError(f"suite={suite[-1]}: none of its tasks has a recipe in "
                          f"{Path(recipes) / 'downstream'}")
    multirun = [] if any(a in ("-m", "--multirun") for a in argv) else ["-m"]
    launcher = [] if any(a.lstrip("+").startswith("hydra/launcher=") for a in argv) \
        else ["hydra/launcher=parallel"]
    return [*multirun, *argv, *launcher, "downstream=" + ",".join(have)]


def check_launcher(argv: list[str], recipes) -> None:
    """``hydra/launcher=NAME`` of recipes/hydra/launcher/ (local, slurm) runs through Hydra's
    submitit launcher plugin, the ``slurm`` extra: without it, one line naming the extra
    (Hydra alone says it cannot find 'hydra/launcher/submitit_local')."""
    from pathlib import Path

    from speechssl.extras import require

    for arg in argv:
        key, _, name = arg.lstrip("+").partition("=")
        if key == "hydra/launcher" and (Path(recipes) / "hydra" / "launcher" / f"{name}.yaml").is_file():
            require("hydra_plugins.hydra_submitit_launcher", "slurm", arg)


def cli() -> None:
    try:
        # upstream=my.pkg:Model (or an entry-point name) has no yaml recipe: route it
        # through recipes/upstream/plugin.yaml before Hydra sees the command line
        from speechssl.upstream.plugin import rewrite_overrides

        sys.argv[1:] = rewrite_overrides(sys.argv[1:], RECIPES)
        sys.argv[1:] = expand_suite(sys.argv[1:], RECIPES)
        check_launcher(sys.argv[1:], RECIPES)
        overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
        if not any(a in ("-h", "--help", "--cfg", "-c", "--info") for a in sys.argv[1:]):
            from speechssl.config import check_overrides

            check_overrides(overrides)
        main()
    except SpeechSSLError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

