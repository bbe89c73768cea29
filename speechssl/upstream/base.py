"""The upstream interface, its output type, and the upstream registry (name -> class)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.registry import Registry

# the built-ins register themselves in their modules under speechssl/upstream/
UPSTREAMS = Registry("upstream", packages=("speechssl.upstream",))
# the tuning modes of an upstream built on speechssl's TransformerEncoder (speechssl/tuning.py)
TRANSFORMER_TUNING = ("frozen", "full", "scratch", "adapter", "lora", "prefix", "prompt")


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
    # the ``tuning=`` modes it can host, declared so that config validation builds no model
    # (speechssl/tuning.py checks them against the built upstream): frozen and full, scratch
    # when we build its weights; adapter, lora, prefix, prompt need speechssl's
    # TransformerEncoder (speechssl.tuning.ENCODER_MODES); no parameters: frozen only
    tuning_modes: tuple[str, ...] = ("frozen", "full", "scratch")
    # options that name a checkpoint file the upstream reads (a teacher, a unit model): its
    # pre-training run and its weights hash (cells, feature caches) cover the file's content,
    # not its path (speechssl.upstream.load.checkpoint_digests)
    checkpoint_options: tuple[str, ...] = ()

    @classmethod
    def check_options(cls, **options) -> None:
        """Raise ConfigError for options the constructor refuses, without building the
        model: the default constructs it on the meta device (no memory, no weights).
        Upstreams that read files in their constructor (checkpoints, HuggingFace
        directories) override this with checks that read nothing large."""
        with torch.device("meta"):
            cls(**options)

    def forward(self, x: Tensor, lengths: Tensor) -> UpstreamOutput:  # pragma: no cover
        raise NotImplementedError

    def pretrain_loss(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Self-supervised loss: {"loss": scalar, **scalars to log}."""
        raise NotImplementedError(f"upstream {type(self).__name__} has no pre-training loss")

    def prepare(self, corpus, run_dir, device) -> None:
        """Called by the pre-training loop before its first step (and again on resume),
        with the Corpus, the run directory (for caches such as HuBERT's k-means targets)
        and the device. The default does nothing."""

    def before_step(self, step: int) -> None:
        """Called by the pre-training loop before each optimizer step; ``step`` counts the
        steps done so far (0 before the first; never called once the budget is spent). The
        default does nothing; deepcluster starts a new round here."""

    def after_step(self, step: int) -> None:
        """Called by the pre-training loop after each optimizer step; ``step`` counts the
        steps done so far (1 after the first). The default does nothing; data2vec updates
        its EMA teacher here."""

    def weights_hash(self) -> str | None:
        """A hash of weights the upstream loaded itself (say, from a local checkpoint
        directory named in its options); None when its weights come from us."""
        return None

    @classmethod
    def pretrains(cls) -> bool:
        """Whether the class defines a self-supervised objective (``pretrain_loss``)."""
        return cls.pretrain_loss is not Upstream.pretrain_loss

    @property
    def can_pretrain(self) -> bool:
        return type(self).pretrains()

    @torch.no_grad()
    def describe(self) -> dict:
        """Layer count and feature size, measured on one second of input."""
        device = next(self.parameters(), torch.zeros(())).device
        x = torch.zeros(1, self.sample_rate, device=device)
        out = self(x, torch.tensor([self.sample_rate], device=device))
        return {"num_layers": len(out.hidden_states), "hidden_size": out.hidden_states[0].shape[-1]}


def register_upstream(name: str):
    """Class decorator: make ``name`` usable as ``upstream=name``."""
    return UPSTREAMS.register(name)


def registered_upstreams() -> list[str]:
    """Built-in upstream names and those installed packages declare in the
    ``speechssl.upstreams`` entry-point group (``module:Class`` names are not listed)."""
    from speechssl.upstream.plugin import entry_point_names

    return sorted(set(UPSTREAMS.names()) | set(entry_point_names()))


def upstream_class(name: str) -> type[Upstream]:
    """The class behind an upstream name: a built-in (or ``@register_upstream``-ed) name,
    ``module.path:ClassName``, or an entry point of the ``speechssl.upstreams`` group."""
    from speechssl.upstream import plugin

    cls = UPSTREAMS.find(name)
    if cls is not None:
        return cls
    if ":" in name:
        return plugin.import_class(name)
    cls = plugin.entry_point_class(name)
    if cls is not None:
        return cls
    installed = plugin.entry_point_names()
    raise ConfigError(
        f"unknown upstream {name!r}; registered upstreams: {', '.join(sorted(UPSTREAMS.names()))}"
        + (f"; installed plug-ins: {', '.join(installed)}" if installed else "")
        + "; or name your own class as module.path:ClassName (docs/plug-in.md)"
    )


def check_option_names(name: str, cls: type[Upstream], options: dict) -> None:
    """ConfigError naming the valid options when ``options`` has a key the class's
    constructor does not take (a class with ``**kwargs`` takes any)."""
    params = inspect.signature(cls.__init__).parameters
    var_kw = inspect.Parameter.VAR_KEYWORD
    if any(p.kind is var_kw for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"upstream {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )


def check_option_types(name: str, cls: type[Upstream], options: dict) -> None:
    """ConfigError naming ``upstream.KEY`` when a value does not fit the type annotation of
    the constructor's parameter: a bool must be true or false (``upstream.normalize=maybe``
    is refused, not read as true), an int an integer, a float a number, a str a string,
    ``X | None`` also null, a list or tuple a list of such. Unannotated options are free."""
    from speechssl.schema import check_annotated

    check_annotated("upstream", name, cls, options)


def check_upstream(name: str, **options) -> type[Upstream]:
    """The class of ``upstream=name`` after checking ``options`` against it (names from its
    signature, types from its annotations, values by its ``check_options``), without
    building a model."""
    cls = upstream_class(name)
    check_option_names(name, cls, options)
    check_option_types(name, cls, options)
    try:
        cls.check_options(**options)
    except (ValueError, TypeError) as e:  # the constructor refused a value: one line
        detail = " ".join(str(e).split())
        raise ConfigError(f"upstream {name!r} refuses its options: {type(e).__name__}: "
                          f"{detail}") from None
    return cls


def builds_from_options(cls: type[Upstream]) -> bool:
    """True when the constructor reads no files (the class keeps the default
    ``check_options``), so the model can be built on the meta device for checks."""
    return getattr(cls.check_options, "__func__", None) is Upstream.check_options.__func__


def meta_model(cls: type[Upstream], **options) -> Upstream | None:
    """The model built on the meta device (shapes, no memory, no weights, no random draws);
    None for a class whose constructor reads files (hf, torchaudio: their own
    ``check_options``)."""
    if not builds_from_options(cls):
        return None
    with torch.device("meta"):
        return cls(**options)


def layer_count(cls: type[Upstream], **options) -> int | None:
    """How many layers (hidden states) the upstream outputs, counted by one forward pass of
    one second of zeros (16 tokens for text) through the model built on the meta device and
    then given zero-filled CPU memory: no weights are read and no random numbers drawn.
    None when that cannot be done (a class that reads files in its constructor, or a
    forward pass that needs real weights)."""
    model = meta_model(cls, **options)
    if model is None:
        return None
    try:
        model = model.to_empty(device="cpu").eval()
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                t.zero_()
        if getattr(model, "modality", "audio") == "text":
            x, lengths = torch.zeros(1, 16, dtype=torch.long), torch.tensor([16])
        else:
            n = int(model.sample_rate)
            x, lengths = torch.zeros(1, n), torch.tensor([n])
        with torch.inference_mode():
            return len(model(x, lengths).hidden_states)
    except Exception:  # noqa: BLE001 (counted later, from the real model's features)
        return None


def build_upstream(name: str, **kwargs) -> Upstream:
    """Instantiate a registered upstream; unknown keyword arguments are a ConfigError."""
    cls = upstream_class(name)
    check_option_names(name, cls, kwargs)
    return cls(**kwargs)
