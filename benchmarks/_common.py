"""Helpers shared by the benchmark scripts: medians, markdown tables, machine facts.

Standard library and torch only: bench_upstream_throughput.py also imports this module in
its s3prl worker process, which must not import speechssl.
"""

from __future__ import annotations

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
