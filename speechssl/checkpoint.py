"""Checkpoints: weights as safetensors, optimizer state as a weights-only torch file,
written atomically so an interruption never leaves a half-written checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from speechssl.atomic import atomic_write
from speechssl.errors import SpeechSSLError


def save_weights(path: str | Path, module: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """The module's state dict as safetensors (contiguous CPU copies; shared tensors cloned)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p), metadata=metadata or {}))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors checkpoint (upstream, options, corpus, steps, ...)."""
    path = Path(path)
    if not path.is_file():
        raise SpeechSSLError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise SpeechSSLError(f"{path}: not a readable safetensors checkpoint ({e})") from None


def load_weights(path: str | Path, module: nn.Module) -> dict[str, str]:
    """Load safetensors weights into ``module`` (strict); returns the file's metadata."""
    metadata = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise SpeechSSLError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SpeechSSLError(f"{path}: weights do not fit {type(module).__name__} "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return metadata


def state_hash(module: nn.Module, n: int = 12) -> str:
    """A hash of the weights themselves (names, dtypes, shapes, bytes): equal weights give
    equal hashes whatever file they came from (safetensors' metadata order varies)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:n]


def save_training_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        state: dict) -> None:
    """model.safetensors + optimizer.pt + state.json, swapped in as one directory."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(tmp / "model.safetensors", model)
    extra = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    torch.save(extra, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(directory: str | Path, model: nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore what save_training_state wrote; None if there is no complete checkpoint."""
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        return None
    load_weights(directory / "model.safetensors", model)
    extra = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["torch_rng"])
    return json.loads((directory / "state.json").read_text())
