"""Helpers shared by the benchmark scripts: medians, markdown tables, machine facts, and
the project's config composition (:func:`compose_config`).

Standard library and torch only at import time: bench_upstream_throughput.py also imports
this module in its s3prl worker process, which must not import speechssl (hydra and
speechssl are imported inside :func:`compose_config` only).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def add_repo_to_path() -> None:
    """Make ``import speechssl`` work when a script is run as ``python benchmarks/x.py``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def compose_config(overrides=()):
    """The full config of a run, composed by Hydra from ``speechssl.config.RECIPES`` with
    ``overrides`` exactly as ``python run.py`` composes it (e.g. ``["upstream=apc",
    "downstream=ks", "corpus.size=tiny"]``): a recipe option added later reaches the
    benchmarks too. Build from it with ``downstream.base.task_from_config(cfg.downstream)``
    and ``speechssl.upstream.load.build_from_config(cfg.upstream)``."""
    add_repo_to_path()
    from speechssl.config import compose_config as compose

    return compose(list(overrides))


def option_overrides(group: str, options: dict) -> list[str]:
    """Hydra overrides that set (or add) ``group.key=value`` for each of ``options``,
    e.g. ``{"hidden_size": 768}`` -> ``["++upstream.hidden_size=768"]``."""
    return [f"++{group}.{k}={json.dumps(v)}" for k, v in options.items()]


def set_overrides(group: str, items: list[str], error) -> list[str]:
    """``KEY=VALUE`` command-line items (``--set`` / ``--upstream-set``; values in Hydra's
    override syntax, which reads numbers, booleans and lists as YAML does) -> Hydra
    overrides of ``group``; ``error(message)`` on an item without ``=``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            error(f"{item!r}: expected KEY=VALUE")
        out.append(f"++{group}.{key}={value}")
    return out


def fill_sizes(args, **sizes) -> None:
    """The sizes left unset on the command line (None) -> their default: ``name=(full,
    quick)``, the quick one under ``--quick``; a size given explicitly wins either way."""
    for key, (full, quick) in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)


def median(xs) -> float:
    return float(statistics.median(xs))


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits ('-' for None)."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f}, {b:.2f}, {c:.2f}"
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_header() -> str:
    """Date, nproc, CPU model, Python and torch versions, load average: one markdown list."""
    import torch

    return "\n".join([
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: nproc={os.cpu_count()}, CPU: {cpu_model()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}",
        f"- load average at start (1, 5, 15 min): {load_average()}",
    ])


def run_logged(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)
