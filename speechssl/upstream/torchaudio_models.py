"""torchaudio's wav2vec 2.0 / HuBERT / WavLM (Baevski et al., 2020; Hsu et al., 2021; Chen et
al., 2022): built from an architecture name, or imported from a fairseq checkpoint file
(``import_fairseq_model``) or a local HuggingFace directory (``import_huggingface_model``)."""

from __future__ import annotations

import ast
import math
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import torch
import torchaudio
from torch import Tensor

from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.nn.masking import valid_mask
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream
from speechssl.upstream.hf import (
    check_model_dir,
    files_hash,
    load_hf_model,
    local_model_dir,
    pad_layers,
)

ARCHS = ("wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "hubert_base",
         "hubert_large", "hubert_xlarge", "wavlm_base", "wavlm_large",
         "wav2vec2_model", "wavlm_model")  # the last two take the whole architecture
FAIRSEQ_CONV_DEFAULT = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"
CONVERT_HINT = ("convert it once where you trust the file: torch.save({'cfg': <the cfg as "
                "plain dicts>, 'model': <its state dict>}, 'out.pt') (docs/plug-in.md)")


def load_pickle(path: str | Path) -> dict:
    """A torch pickle loaded with weights_only=True; anything else is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"upstream.fairseq={path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported operand" in msg or "invalid load key" in msg:
            raise SpeechSSLError(f"{path}: not a readable torch checkpoint") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        what = f"an object of class {found.group(1)}" if found else "objects other than tensors and plain containers"
        raise SpeechSSLError(f"{path}: refused: the pickle holds {what}, and checkpoints are "
                             f"only loaded with torch.load(weights_only=True), which cannot "
                             f"run code; {CONVERT_HINT}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise SpeechSSLError(f"{path}: not a readable torch checkpoint ({e})") from None
    if not isinstance(obj, dict):
        raise SpeechSSLError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4",
    evaluated without eval(): only lists, tuples, ints, + and *."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    try:
        layers = ev(ast.parse(spec, mode="eval"))
        return [(int(c), int(k), int(s)) for c, k, s in layers]
    except (SyntaxError, ValueError, TypeError) as e:
        raise ConfigError(f"conv_feature_layers={spec!r} is not a list of (dim, kernel, stride): "
                          f"{e}") from None


def _split_cfg(cfg: dict) -> tuple[dict, dict]:
    """fairseq's config -> (model, task): nested (hydra-era ``cfg``) or flat (``args``)."""
    if isinstance(cfg.get("model"), dict):
        task = cfg.get("task")
        return cfg["model"], task if isinstance(task, dict) else {}
    return cfg, cfg


def _fairseq_parts(ckpt: dict, path: Path) -> tuple[dict, dict, dict]:
    """-> (encoder state dict in fairseq pre-training names, model cfg, task cfg); a
    fine-tuned (``w2v_encoder.``) checkpoint gives its pre-trained encoder."""
    if "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise SpeechSSLError(f"{path}: no 'model' state dict; not a fairseq checkpoint")
    cfg = ckpt.get("cfg") or ckpt.get("args") or {}
    if not isinstance(cfg, dict):
        raise SpeechSSLError(f"{path}: 'cfg' is a {type(cfg).__name__}, not a dict; {CONVERT_HINT}")
    model_cfg, task_cfg = _split_cfg(cfg)
    if isinstance(model_cfg.get("w2v_args"), dict):  # fine-tuned: the pre-training config
        model_cfg, inner_task = _split_cfg(model_cfg["w2v_args"])
        task_cfg = {**task_cfg, **inner_task}
    state = {}
    for k, v in ckpt["model"].items():
        k = k.removeprefix("w2v_encoder.").removeprefix("w2v_model.")
        if k.startswith("proj."):  # a fine-tuning head, not part of the representation
            continue
        state[k] = v
    return state, dict(model_cfg), dict(task_cfg)


def _fairseq_shim(state: dict, mc: dict, path: Path):
    """A stand-in for fairseq's Wav2Vec2Model / HubertModel with just what torchaudio's
    ``import_fairseq_model`` reads, built from the state dict's shapes and the config."""
    ns = SimpleNamespace
    try:
        convs = parse_conv_layers(str(mc.get("conv_feature_layers") or FAIRSEQ_CONV_DEFAULT))
        conv_layers = []
        for i, (dim, kernel, stride) in enumerate(convs):
            w = state[f"feature_extractor.conv_layers.{i}.0.weight"]
            if tuple(w.shape[::2]) != (dim, kernel):
                raise SpeechSSLError(f"{path}: conv layer {i} has weights {tuple(w.shape)}, the "
                                     f"config says (dim {dim}, kernel {kernel})")
            bias = state.get(f"feature_extractor.conv_layers.{i}.0.bias")
            conv = ns(out_channels=dim, kernel_size=(kernel,), stride=(stride,), bias=bias)
            conv_layers.append([conv, None, None])
        group = "feature_extractor.conv_layers.0.2.weight" in state
        conv_layers[0][2] = type("GroupNorm" if group else "LayerNorm", (), {})()
        pos_v = state["encoder.pos_conv.0.weight_v"]  # (C, C / groups, kernel)
        n_layers = len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")})
        layer = ns(self_attn=ns(num_heads=int(mc.get("encoder_attention_heads", 12)),
                                dropout_module=ns(p=float(mc.get("attention_dropout", 0.1)))),
                   fc1=ns(out_features=state["encoder.layers.0.fc1.weight"].shape[0]),
                   dropout2=ns(p=float(mc.get("activation_dropout", 0.0))),
                   dropout3=ns(p=float(mc.get("dropout", 0.1))))
        encoder = ns(pos_conv=[ns(kernel_size=(pos_v.shape[2],),
                                  groups=pos_v.shape[0] // pos_v.shape[1])],
                     layers=[layer] * n_layers,
                     layer_norm_first=bool(mc.get("layer_norm_first", False)),
                     layerdrop=float(mc.get("encoder_layerdrop", 0.0)))
        proj = ns(out_features=state["post_extract_proj.weight"].shape[0])
    except KeyError as e:
        raise SpeechSSLError(f"{path}: missing {e.args[0]!r}; not a fairseq wav2vec 2.0 / HuBERT "
                             f"state dict torchaudio can import") from None
    kind = str(mc.get("_name") or mc.get("arch") or "")
    name = "HubertModel" if "hubert" in kind else "Wav2Vec2Model"
    shim = type(name, (), {"state_dict": lambda self: state})()
    shim.__dict__.update(feature_extractor=ns(conv_layers=conv_layers), encoder=encoder,
                         post_extract_proj=proj,
                         dropout_input=ns(p=float(mc.get("dropout_input", 0.0))))
    return shim


def import_fairseq_file(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """A fairseq wav2vec 2.0 / HuBERT checkpoint file -> (torchaudio Wav2Vec2Model, task cfg)."""
    from torchaudio.models.wav2vec2.utils import import_fairseq_model

    path = Path(path)
    state, model_cfg, task_cfg = _fairseq_parts(load_pickle(path), path)
    shim = _fairseq_shim(state, model_cfg, path)
    try:
        model = import_fairseq_model(shim)
        from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

        # import_fairseq_model loads with strict=False: a weight it did not fill is an error
        missing, _ = model.load_state_dict(_convert_state_dict(state), strict=False)
    except (ValueError, RuntimeError) as e:
        raise SpeechSSLError(f"{path}: torchaudio cannot import this checkpoint: {e}") from None
    if missing:
        raise SpeechSSLError(f"{path}: the checkpoint lacks weights {missing[:5]}")
    return model, task_cfg


@register_upstream("torchaudio")
class TorchaudioUpstream(Upstream):
    """A torchaudio ``Wav2Vec2Model`` (wav2vec 2.0, HuBERT and WavLM share it).

    Weights from exactly one of: ``fairseq`` (a fairseq checkpoint file, loaded with
    ``torch.load(weights_only=True)``), ``hf`` (a local transformers directory), or none:
    ``arch`` (a builder in torchaudio.models, with ``arch_options`` as its keyword
    arguments), initialized from ``init_seed``, for ``upstream.ckpt=`` weights or as a
    random baseline. Hidden states: the transformer's input, then every layer's output,
    (B, T, D) with one frame per prod(conv strides) samples. ``normalize``: zero-mean
    unit-variance waveforms (null: the checkpoint's own setting). ``batched=false`` runs
    each utterance alone (group-norm feature encoders would otherwise see the padding).
    """

    # scratch for an ``arch`` (weights we initialise); lora through peft (speechssl/tuning_peft.py)
    tuning_modes = ("frozen", "full", "scratch", "lora")

    @classmethod
    def check_options(cls, arch: str | None = None, arch_options: dict | None = None,
                      fairseq: str | None = None, hf: str | None = None,
                      normalize: bool | None = None, batched: bool = False,
                      init_seed: int = 0) -> None:
        """The weight source, checked without reading the weights."""
        given = [k for k, v in (("arch", arch), ("fairseq", fairseq), ("hf", hf)) if v]
        if len(given) != 1:
            raise ConfigError(
                "upstream=torchaudio needs exactly one of upstream.arch=<" + "|".join(ARCHS)
                + "> (random init, or weights from upstream.ckpt), upstream.fairseq=<file.pt>, "
                f"upstream.hf=<local dir>; got {', '.join(given) or 'none'}")
        if arch and arch not in ARCHS:
            raise ConfigError(f"upstream.arch={arch!r}; valid: {', '.join(ARCHS)}")
        if fairseq and not Path(str(fairseq)).expanduser().is_file():
            raise ConfigError(f"upstream.fairseq={fairseq}: checkpoint file not found")
        if hf:
            check_model_dir(hf, "upstream.hf")

    def __init__(self, arch: str | None = None, arch_options: dict | None = None,
                 fairseq: str | None = None, hf: str | None = None,
                 normalize: bool | None = None, batched: bool = False, init_seed: int = 0):
        super().__init__()
        self.check_options(arch, arch_options, fairseq, hf)
        self.source: Path | None = None
        default_norm = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            if arch:
                self.model = self._build(arch, dict(arch_options or {}))
            elif fairseq:
                self.source = Path(str(fairseq)).expanduser()
                self.model, task_cfg = import_fairseq_file(self.source)
                default_norm = bool(task_cfg.get("normalize", False))
            else:
                from torchaudio.models.wav2vec2.utils import import_huggingface_model

                self.source = local_model_dir(hf, "upstream.hf")
                original, config = load_hf_model(self.source, "upstream.hf")
                if config.model_type not in ("wav2vec2", "hubert", "wavlm"):
                    raise ConfigError(f"upstream.hf={hf}: model_type {config.model_type!r}; "
                                      f"torchaudio imports wav2vec2, hubert and wavlm")
                self.model = import_huggingface_model(original)
                default_norm = self._hf_do_normalize()
        self.model.eval()
        self.normalize = default_norm if normalize is None else bool(normalize)
        self.batched = bool(batched)
        self.downsample_rate = math.prod(
            int(layer.conv.stride[0]) for layer in self.model.feature_extractor.conv_layers)
        self._hash: str | None = None

    @staticmethod
    def _build(arch: str, options: dict):
        if arch not in ARCHS:
            raise ConfigError(f"upstream.arch={arch!r}; valid: {', '.join(ARCHS)}")
        if "extractor_conv_layer_config" in options:
            options["extractor_conv_layer_config"] = [
                tuple(c) for c in options["extractor_conv_layer_config"]]
        options.setdefault("aux_num_out", None)
        try:
            return getattr(torchaudio.models, arch)(**options)
        except TypeError as e:
            raise ConfigError(f"upstream.arch_options for {arch}: {e}") from None

    def _hf_do_normalize(self) -> bool:
        import json

        pre = self.source / "preprocessor_config.json"
        return bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True

    def peft_family(self) -> str:
        """"wavlm" (its attention is torch's MultiheadAttention) or "torchaudio" (wav2vec 2.0
        and HuBERT's SelfAttention with q/k/v/out projections): speechssl/tuning_peft.py."""
        from torchaudio.models.wav2vec2.wavlm_attention import WavLMSelfAttention

        wavlm = any(isinstance(m, WavLMSelfAttention) for m in self.model.modules())
        return "wavlm" if wavlm else "torchaudio"

    def peft_model(self) -> torch.nn.Module:
        """The module peft's layers go into."""
        return self.model

    def weights_hash(self) -> str | None:
        if self.source is None:
            return None  # random init from the options: the options' hash names it
        if self._hash is None:
            self._hash = files_hash(self.source)
        return self._hash

    def _layers(self, wavs: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """wavs (B, S) -> [(B, T, D)] * (num_layers + 1), frame counts (B,)."""
        if self.normalize:  # fairseq's task.normalize: layer_norm over each utterance
            wavs = wavs.clone()
            n_valid = lengths.tolist() if lengths is not None else [wavs.shape[1]] * len(wavs)
            for i, n in enumerate(n_valid):
                wavs[i, :n] = torch.nn.functional.layer_norm(wavs[i, :n], (n,))
        captured = []
        hook = self.model.encoder.transformer.layers[0].register_forward_pre_hook(
            lambda _m, args: captured.append(args[0]))
        try:
            layers, frames = self.model.extract_features(wavs, lengths)
        finally:
            hook.remove()
        if frames is None:
            frames = torch.full((wavs.shape[0],), layers[0].shape[1], device=wavs.device)
        return [captured[0], *layers], frames.long()

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        wavs = wavs.float() * valid_mask(lengths, wavs.shape[1])
        if self.batched:
            layers, frames = self._layers(wavs, lengths)
            return UpstreamOutput(hidden_states=layers, lengths=frames)
        per_utt = [self._layers(wavs[i: i + 1, : int(n)], None)[0] for i, n in enumerate(lengths)]
        layers, frames = pad_layers(per_utt)
        return UpstreamOutput(hidden_states=layers, lengths=frames)
