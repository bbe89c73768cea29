"""Optional dependencies: pyproject.toml's extras, and the one way the code imports them.

The core install (`pip install speechssl`) runs every mode, upstream and task except the
pieces below; each of those imports its package through :func:`require` (or inside a
try/except ImportError that says the same), which stops with one line naming the extra to
install instead of a traceback. tests/test_dependencies.py checks this table against
pyproject.toml and imports every module with the extras absent.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from speechssl.errors import ConfigError

# extra -> (the distributions it installs, what needs them)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "hf": (("transformers", "peft"), "upstream=hf, text upstreams of a HuggingFace directory, "
                                      "upstream=torchaudio upstream.hf=<dir>, their tuning=lora"),
    "beam": (("flashlight-text",), "ASR beam search with the n-gram LM "
                                   "(downstream.decoder=beam)"),
    "slurm": (("hydra-submitit-launcher",), "sweeps through Hydra's submitit launcher "
                                            "(hydra/launcher=slurm or local)"),
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: from PyPI, or into a checkout."""
    if extra not in EXTRAS:
        raise KeyError(f"no extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    return f'pip install "speechssl[{extra}]" (in a checkout: pip install -e ".[{extra}]")'


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` of the optional ``extra``, or raise a ConfigError that names ``what``
    needs it (a config key, e.g. ``downstream.decoder=beam``) and how to install it."""
    hint = install_hint(extra)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        dists = " and ".join(EXTRAS[extra][0])
        raise ConfigError(f"{what} needs {dists}, which is not installed ({e}): {hint}") from None
