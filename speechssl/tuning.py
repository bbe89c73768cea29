"""How the upstream takes part in a downstream cell (``tuning=``, recipes/tuning/): what
trains, what stays frozen, and the checks that say so before any work starts.

- frozen: nothing in the upstream trains; the SUPERB protocol (Yang et al., 2021).
- full: every upstream parameter the features depend on trains (Devlin et al., 2019).
- scratch: as full, from the architecture's random initialisation (the lecture's baseline).
- adapter: Houlsby et al., 2019, bottleneck adapters after every layer's feed-forward.
- lora: Hu et al., 2021, low-rank updates of every layer's q/k/v and output projections.
- prefix: Li & Liang, 2021, learned key/value prefixes in every layer's self-attention.
- prompt: Lester et al., 2021, soft prompt vectors prepended to the encoder input.

The last four need the shared transformer (speechssl/nn/transformer.py: mockingjay, tera,
wav2vec2, hubert, data2vec, bert, gpt); the layers are in speechssl/nn/peft.py. They are
installed in the encoders the upstream's forward actually runs (an EMA teacher is left
alone), found, like the parameters "the features depend on", by one forward and backward
pass on a short dummy input. Checkpoints of transformers and torchaudio (upstream=hf,
upstream=torchaudio) take lora through the peft library instead (speechssl/tuning_peft.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from speechssl import tuning_peft
from speechssl.errors import ConfigError
from speechssl.nn.peft import Adapter, LoRA, Prefix, soft_prompt
from speechssl.nn.transformer import TransformerEncoder, distinct_layers
from speechssl.registry import Registry


@dataclass(frozen=True)
class TuningMode:
    """A ``tuning=`` mode: its options (name -> (type, lower bound, bound inclusive)) and,
    for the parameter-efficient modes, ``install(encoder, options)``, which puts the mode's
    layers into a TransformerEncoder and returns the parameters that train."""

    options: dict[str, tuple]
    install: Callable[[TransformerEncoder, dict], list] | None = None


TUNING = Registry("tuning")
LR = {"upstream_lr": (float, 0.0, False)}
TUNING.add("frozen", TuningMode({}))
TUNING.add("full", TuningMode(LR))
TUNING.add("scratch", TuningMode(LR))


def _adapter(encoder: TransformerEncoder, opts: dict) -> list:
    dim = encoder.layers[0].attn.qkv.in_features
    trained: list = []
    for layer in distinct_layers(encoder):  # a shared (ALBERT) layer gets one adapter
        layer.adapter = Adapter(dim, int(opts["bottleneck"]))
        trained.append(layer.adapter)
        if opts["train_norms"]:
            trained += [layer.norm1, layer.norm2]
    if opts["train_norms"] and encoder.final_norm is not None:
        trained.append(encoder.final_norm)
    return trained


def _lora(encoder: TransformerEncoder, opts: dict) -> list:
    dim = encoder.layers[0].attn.qkv.in_features
    trained: list = []
    for layer in distinct_layers(encoder):
        attn = layer.attn
        attn.lora_qkv = LoRA(dim, attn.qkv.out_features, int(opts["rank"]),
                             float(opts["alpha"]), float(opts["dropout"]), groups=3)
        attn.lora_out = LoRA(dim, attn.out.out_features, int(opts["rank"]),
                             float(opts["alpha"]), float(opts["dropout"]))
        trained += [attn.lora_qkv, attn.lora_out]
    return trained


def _prefix(encoder: TransformerEncoder, opts: dict) -> list:
    dim = encoder.layers[0].attn.qkv.in_features
    encoder.prefix = Prefix(len(encoder.layers), dim, int(opts["length"]),
                            int(opts["reparam_hidden"]), float(opts["init_std"]))
    return [encoder.prefix]


def _prompt(encoder: TransformerEncoder, opts: dict) -> list:
    dim = encoder.layers[0].attn.qkv.in_features
    encoder.prompt = soft_prompt(int(opts["length"]), dim, float(opts["init_std"]))
    return [encoder.prompt]


TUNING.add("adapter", TuningMode({**LR, "bottleneck": (int, 1, True),
                                  "train_norms": (bool, None, None)}, _adapter))
TUNING.add("lora", TuningMode({**LR, "rank": (int, 1, True), "alpha": (float, 0.0, False),
                               "dropout": (float, 0.0, True)}, _lora))
TUNING.add("prefix", TuningMode({**LR, "length": (int, 1, True), "reparam_hidden": (int, 0, True),
                                 "init_std": (float, 0.0, False)}, _prefix))
TUNING.add("prompt", TuningMode({**LR, "length": (int, 1, True),
                                 "init_std": (float, 0.0, False)}, _prompt))
# the modes that need a TransformerEncoder
ENCODER_MODES = tuple(n for n in TUNING.names() if TUNING.get(n).install is not None)


def mode_of(cfg: DictConfig) -> str:
    """The run's tuning mode; configs written before tuning existed are frozen."""
    tc = cfg.get("tuning")
    return "frozen" if tc is None else str(tc.name)


def options(tc: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(tc, resolve=True).items() if k != "name"}


def check_tuning(tc: DictConfig | None) -> None:
    """ConfigError for an unknown mode, an option the mode does not have, or a bad value."""
    if tc is None:
        return
    name = tc.get("name")
    if name not in TUNING:
        raise ConfigError(f"tuning={name!r}; valid modes: {', '.join(TUNING.names())}")
    spec = TUNING.get(name).options
    for key, value in options(tc).items():
        if key not in spec:
            raise ConfigError(f"tuning={name} has no option {key!r}; valid options: "
                              f"{', '.join(spec) or '(none)'}")
        kind, low, inclusive = spec[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"tuning.{key}={value!r} must be true or false")
            continue
        ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            ok_type = ok_type and float(value).is_integer()
        if not ok_type or (value < low if inclusive else value <= low) or (
                key == "dropout" and value >= 1):
            bound = f">= {low}" if inclusive else f"> {low}"
            rule = "in [0, 1)" if key == "dropout" else f"{kind.__name__} {bound}"
            raise ConfigError(f"tuning.{key}={value!r} (tuning={name}) must be {rule}")


def supported_modes(upstream: nn.Module) -> tuple[str, ...]:
    """The modes ``upstream`` can host: frozen always; full with parameters; scratch when
    we build its weights (not hf/torchaudio checkpoints, which load their own); the
    parameter-efficient modes when it is built on speechssl's TransformerEncoder, and those
    peft gives a transformers / torchaudio model (speechssl/tuning_peft.py)."""
    out = ["frozen"]
    if any(True for _ in upstream.parameters()):
        out.append("full")
        if upstream.weights_hash() is None:
            out.append("scratch")
    if any(isinstance(m, TransformerEncoder) for m in upstream.modules()):
        out += ENCODER_MODES
    out += [m for m in tuning_peft.peft_modes(upstream) if m not in out]
    return tuple(out)


def check_supported(upstream: nn.Module | type, name: str, mode: str) -> None:
    """ConfigError unless ``upstream`` can host ``mode``: a built upstream by its structure
    (:func:`supported_modes`), an upstream class by its declared ``tuning_modes`` (config
    validation builds no model)."""
    cls = upstream if isinstance(upstream, type) else type(upstream)
    supported = cls.tuning_modes if isinstance(upstream, type) else supported_modes(upstream)
    if mode in supported:
        return
    if mode in ENCODER_MODES:
        why = "it has no speechssl TransformerEncoder to put them in"
        if hasattr(cls, "peft_family"):  # a transformers / torchaudio model: peft's modes
            why = tuning_peft.why_not(None if isinstance(upstream, type) else upstream, mode)
    elif mode == "scratch" and "full" in supported:
        why = "its weights come from its own checkpoint files, not from an architecture we build"
    else:
        why = "it has no parameters"
    raise ConfigError(f"tuning={mode} cannot be used with upstream {name!r} ({why}); "
                      f"upstream {name!r} supports tuning={', '.join(supported)}")


def dummy_input(upstream: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A short input on the upstream's device: 8 token ids, or 1 s of low noise."""
    device = next(upstream.parameters()).device
    if getattr(upstream, "modality", "audio") == "text":
        return torch.zeros(1, 8, dtype=torch.long, device=device), torch.tensor([8], device=device)
    n = int(upstream.sample_rate)
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(0)) * 0.1
    return x.to(device), torch.tensor([n], device=device)


def forward_path(upstream: nn.Module) -> tuple[list[TransformerEncoder], set[str]]:
    """The TransformerEncoders the upstream's forward runs, and the names of the parameters
    its hidden states depend on (one forward and backward in eval mode; gradients, flags
    and mode are restored)."""
    was_training = upstream.training
    flags = {n: p.requires_grad for n, p in upstream.named_parameters()}
    ran: list[TransformerEncoder] = []
    hooks = [m.register_forward_hook(lambda mod, *_: ran.append(mod))
             for m in upstream.modules() if isinstance(m, TransformerEncoder)]
    try:
        upstream.eval()
        for p in upstream.parameters():
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad():
            out = upstream(*dummy_input(upstream))
            total = sum(h.float().sum() for h in out.hidden_states)
            if total.requires_grad:
                total.backward()
        used = {n for n, p in upstream.named_parameters() if p.grad is not None}
    finally:
        for h in hooks:
            h.remove()
        for n, p in upstream.named_parameters():
            p.grad = None
            p.requires_grad_(flags[n])
        upstream.train(was_training)
    encoders = list({id(m): m for m in ran}.values())
    return encoders, used


def install(encoder: TransformerEncoder, mode: str, opts: dict) -> list[nn.Parameter]:
    """Put ``mode``'s layers into ``encoder`` (speechssl/nn/peft.py); returns the parameters
    that train: the new layers' (plus the layer norms for adapters with train_norms)."""
    device = encoder.layers[0].attn.qkv.weight.device
    trained = TUNING.get(mode).install(encoder, opts)
    encoder.to(device)  # in place: the encoder's own parameters are there already
    params = []
    for t in trained:
        if isinstance(t, nn.Module):
            t.train(encoder.training)  # new layers follow the encoder's mode
        params += [t] if isinstance(t, nn.Parameter) else list(t.parameters())
    return params


def install_peft(upstream: nn.Module, mode: str, opts: dict) -> list[nn.Parameter]:
    """peft's layers for ``mode`` in a transformers / torchaudio upstream; a ConfigError
    when one of them is not reached by the upstream's forward (a model whose attention reads
    the projection weights directly would bypass them)."""
    params = tuning_peft.install_lora(upstream, opts)
    upstream.train(upstream.training)  # the new layers (their dropout) follow the model
    _, used = forward_path(upstream)
    names = {id(p): n for n, p in upstream.named_parameters()}
    missed = [names[id(p)] for p in params if names[id(p)] not in used]
    if missed:
        raise ConfigError(f"tuning={mode}: peft's layer {missed[0]} does not reach the "
                          f"upstream's features ({len(missed)} of {len(params)} parameters); "
                          f"this model's forward bypasses it")
    return params


def apply_tuning(upstream: nn.Module, tc: DictConfig | None, name: str, seed: int = 0,
                 fresh: nn.Module | None = None) -> dict[str, nn.Parameter]:
    """Make ``upstream`` (as load_upstream returns it: eval, every parameter frozen) ready for
    ``tc``: install the mode's layers, re-initialise it (scratch: ``fresh``'s parameters,
    buffers such as the tokenizer and normalisation statistics kept), and set
    ``requires_grad`` on exactly the parameters that train. Returns them by name (empty for
    frozen). New layers are drawn from a generator seeded by ``seed``."""
    mode = "frozen" if tc is None else str(tc.name)
    check_supported(upstream, name, mode)
    if mode == "frozen":
        return {}
    opts = options(tc)
    encoders, used = forward_path(upstream)
    if mode == "scratch":
        if fresh is None:
            raise ValueError("tuning=scratch needs the freshly initialised upstream")
        new = dict(fresh.named_parameters())
        with torch.no_grad():
            for n, p in upstream.named_parameters():
                p.copy_(new[n])
    if mode in ("full", "scratch"):
        chosen = {id(p) for n, p in upstream.named_parameters() if n in used}
    elif tuning_peft.family(upstream) is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            chosen = {id(p) for p in install_peft(upstream, mode, opts)}
    else:
        if not encoders:
            raise ConfigError(f"tuning={mode}: upstream {name!r} has a TransformerEncoder "
                              f"but its forward does not run one; supported: frozen, full")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            chosen = {id(p) for enc in encoders for p in install(enc, mode, opts)}
    if not chosen:
        raise ConfigError(f"tuning={mode}: none of upstream {name!r}'s parameters reach its "
                          f"features; use tuning=frozen")
    for p in upstream.parameters():
        p.requires_grad_(id(p) in chosen)
    return {n: p for n, p in upstream.named_parameters() if p.requires_grad}


def set_train_mode(upstream: nn.Module, training: bool) -> None:
    """Train mode for a tuned upstream: dropout on, but modules that own buffers stay in
    eval, because their buffers are statistics of pre-training (global CMVN, batch norm,
    EMA codebooks, Gumbel temperature steps) that fine-tuning must not move."""
    upstream.train(training)
    if training:
        for m in upstream.modules():
            if any(True for _ in m.buffers(recurse=False)):
                m.training = False
