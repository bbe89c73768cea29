"""Checkpoints: weights as safetensors, optimizer state as a weights-only torch file,
written atomically so an interruption never leaves a half-written checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
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
    """Load safetensors weights into ``module`` (strict); returns the file's metadata.
    A file that does not fit (another architecture or size) is one line naming the file and
    the first tensor that differs, with both shapes; nothing is loaded then."""
    metadata = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise SpeechSSLError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    problem = fit_problem(state, module.state_dict())
    if problem:
        of = metadata.get("upstream")
        raise SpeechSSLError(f"{path}: weights do not fit {type(module).__name__}"
                             + (f" (the file holds upstream {of!r})" if of else "")
                             + f": {problem}")
    module.load_state_dict(state, strict=True)
    return metadata


def fit_problem(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly the tensors of ``expected`` with their shapes, else what
    differs first (in the module's order): a shape, a missing or an unexpected tensor. An
    empty tensor of the model is a placeholder that takes the file's size (BERT's
    ``tokenizer_json`` buffer, resized by its ``_load_from_state_dict``)."""
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state and v.numel() > 0 and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    more = len(shapes) + len(missing) + len(unexpected) - 1
    tail = f" (and {more} more difference{'s' * (more > 1)})" if more > 0 else ""
    if shapes:
        name, got, want = shapes[0]
        return f"tensor {name!r} is {list(got)} in the file, {list(want)} in the model{tail}"
    if missing:
        return f"tensor {missing[0]!r} of the model is not in the file{tail}"
    if unexpected:
        return f"tensor {unexpected[0]!r} of the file is not in the model{tail}"
    return ""


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
    """Restore what save_training_state wrote; None if there is no complete checkpoint.
    A damaged file in it is one line naming the file and what to do (restart the run):
    state.json and optimizer.pt are read and checked before the model's weights load (which
    checks the weights first), so a damaged checkpoint leaves the model as it was."""
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        return None

    def damaged(name: str, why: str) -> SpeechSSLError:
        return SpeechSSLError(f"{directory / name}: damaged training checkpoint ({why}): delete "
                              f"{directory} to restart this run from its first step (or "
                              "force=true for a probe run)")

    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged("state.json", str(e)) from None
    if not isinstance(state, dict):
        raise damaged("state.json", f"a JSON {type(state).__name__}, not an object")
    for key in ("step", "epoch", "pos"):
        value = state.get(key)
        if type(value) is not int or value < 0:
            raise damaged("state.json", f"{key!r} is {value!r}, not a count")
    try:
        extra = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise damaged("optimizer.pt", "the file is missing") from None
    except EOFError:
        raise damaged("optimizer.pt", "the file is empty or cut short") from None
    except pickle.UnpicklingError:  # torch's text here suggests weights_only=False: never
        raise damaged("optimizer.pt", "not a weights-only torch file") from None
    except Exception as e:  # torch raises many types for a damaged file; all mean the same
        raise damaged("optimizer.pt", first_line(e)) from None
    if not isinstance(extra, dict) or not {"optimizer", "torch_rng"} <= set(extra):
        raise damaged("optimizer.pt", "no optimizer state and random state in it")
    saved = extra["optimizer"]
    if not (isinstance(saved, dict) and isinstance(saved.get("state"), dict)
            and isinstance(saved.get("param_groups"), list)
            and [len(g.get("params", ())) if isinstance(g, dict) else -1
                 for g in saved["param_groups"]]
            == [len(g["params"]) for g in optimizer.param_groups]):
        raise damaged("optimizer.pt", "its optimizer state does not fit this run's parameters")
    rng = extra["torch_rng"]
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
            and rng.shape == torch.get_rng_state().shape):
        raise damaged("optimizer.pt", "its random state is not a torch generator state")
    weights = directory / "model.safetensors"
    try:
        load_weights(weights, model)
    except SpeechSSLError as e:
        raise damaged(weights.name, str(e).removeprefix(f"{weights}: ")) from None
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise damaged("optimizer.pt", f"its optimizer state does not fit: {first_line(e)}") from None
    torch.set_rng_state(rng)
    return state


def first_line(e: BaseException) -> str:
    """An exception as one short line (torch's messages span several)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
