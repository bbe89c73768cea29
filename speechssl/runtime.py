"""Process-level settings shared by every mode: device, threads, seeds, code version."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from speechssl import __version__
from speechssl.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when available; anything else must be a valid, present device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine")
    return device


PRECISIONS = ("fp32", "bf16")


def precision_of(cfg) -> str:
    """``cfg.precision``; a config saved before the key existed means fp32."""
    return cfg.get("precision", "fp32")


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ConfigError(f"precision={name!r}; valid values: {', '.join(PRECISIONS)}")


def autocast(device: torch.device, precision: str):
    """The forward of a training step: ``bf16`` runs it under ``torch.autocast`` with
    bfloat16 (matmuls, convolutions and attention in bf16, reductions and losses in fp32;
    parameters, gradients and optimizer state stay fp32); ``fp32`` runs it as it is."""
    check_precision(precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def default_threads() -> int:
    """The thread count ``num_threads=0`` means: under torchrun, the cores this process may
    run on (CPU affinity, not the host's count) shared out among the ranks of this node;
    otherwise ``OMP_NUM_THREADS`` when it is set (as torch itself reads it: Hydra's joblib
    launcher sets it to cores / cells running at once in each cell's process, a batch
    scheduler may set it too), else those cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if "LOCAL_WORLD_SIZE" in os.environ:
        return max(1, (cores or 1) // int(os.environ["LOCAL_WORLD_SIZE"]))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return max(1, cores or 1)


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads; 0 = :func:`default_threads`."""
    torch.set_num_threads(n if n > 0 else default_threads())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def code_version() -> str:
    """The git commit of this checkout (with -dirty), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def config_hash(obj, n: int = 10) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]
