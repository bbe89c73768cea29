"""The upstream interface, its output type, and the name -> class registry."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError

_REGISTRY: dict[str, type[Upstream]] = {}


@dataclass
class UpstreamOutput:
    """What every upstream returns.

    hidden_states: one (B, T, D) tensor per layer, all of the same D, first to last.
    lengths: (B,) number of valid frames of each sequence.
    """

    hidden_states: list[Tensor]
    lengths: Tensor


class Upstream(nn.Module):
    """A representation model: waveforms (or token ids) in, layer-wise features out.

    Subclasses set ``modality`` and ``downsample_rate`` (input samples per output
    frame), implement ``forward`` and, if they can be pre-trained, ``pretrain_loss``.
    """

    modality: str = "audio"
    downsample_rate: int = 160
    sample_rate: int = 16000

    def forward(self, x: Tensor, lengths: Tensor) -> UpstreamOutput:  # pragma: no cover
        raise NotImplementedError

    def pretrain_loss(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Self-supervised loss: {"loss": scalar, **scalars to log}."""
        raise NotImplementedError(f"upstream {type(self).__name__} has no pre-training loss")

    def prepare(self, corpus, run_dir, device) -> None:
        """Called by the pre-training loop before its first step (and again on resume),
        with the Corpus, the run directory (for caches such as HuBERT's k-means targets)
        and the device. The default does nothing."""

    def after_step(self, step: int) -> None:
        """Called by the pre-training loop after each optimizer step; ``step`` counts the
        steps done so far (1 after the first). The default does nothing; data2vec updates
        its EMA teacher here."""

    def weights_hash(self) -> str | None:
        """A hash of weights the upstream loaded itself (say, from a local checkpoint
        directory named in its options); None when its weights come from us."""
        return None

    @property
    def can_pretrain(self) -> bool:
        return type(self).pretrain_loss is not Upstream.pretrain_loss

    @torch.no_grad()
    def describe(self) -> dict:
        """Layer count and feature size, measured on one second of input."""
        device = next(self.parameters(), torch.zeros(())).device
        x = torch.zeros(1, self.sample_rate, device=device)
        out = self(x, torch.tensor([self.sample_rate], device=device))
        return {"num_layers": len(out.hidden_states), "hidden_size": out.hidden_states[0].shape[-1]}


def register_upstream(name: str):
    """Class decorator: make ``name`` usable as ``upstream=name``."""

    def wrap(cls: type[Upstream]) -> type[Upstream]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"upstream name {name!r} is already registered to {_REGISTRY[name]}")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def registered_upstreams() -> list[str]:
    """Built-in upstream names and those installed packages declare in the
    ``speechssl.upstreams`` entry-point group (``module:Class`` names are not listed)."""
    from speechssl.upstream.plugin import entry_point_names

    _import_builtins()
    return sorted(set(_REGISTRY) | set(entry_point_names()))


def upstream_class(name: str) -> type[Upstream]:
    """The class behind an upstream name: a built-in (or ``@register_upstream``-ed) name,
    ``module.path:ClassName``, or an entry point of the ``speechssl.upstreams`` group."""
    from speechssl.upstream import plugin

    _import_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return plugin.import_class(name)
    cls = plugin.entry_point_class(name)
    if cls is not None:
        return cls
    installed = plugin.entry_point_names()
    raise ConfigError(
        f"unknown upstream {name!r}; registered upstreams: {', '.join(sorted(_REGISTRY))}"
        + (f"; installed plug-ins: {', '.join(installed)}" if installed else "")
        + "; or name your own class as module.path:ClassName (docs/plug-in.md)"
    )


def build_upstream(name: str, **kwargs) -> Upstream:
    """Instantiate a registered upstream; unknown keyword arguments are a ConfigError."""
    cls = upstream_class(name)
    params = inspect.signature(cls.__init__).parameters
    var_kw = inspect.Parameter.VAR_KEYWORD
    accepts_any = any(p.kind is var_kw for p in params.values())
    valid = [n for n, p in params.items() if n != "self" and p.kind is not var_kw]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown and not accepts_any:
        raise ConfigError(
            f"upstream {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return cls(**kwargs)


def _import_builtins() -> None:
    # Importing the package registers every built-in upstream module.
    import speechssl.upstream  # noqa: F401
