"""The upstreams built on the wav2vec 2.0 backbone (wav2vec2, hubert, data2vec;
speechssl/nn/wav2vec2_backbone.py) as HuggingFace transformers checkpoints (Wolf et al.,
2020): ``mode=export format=hf`` writes a ``save_pretrained`` directory (config.json,
model.safetensors, preprocessor_config.json) that ``transformers.AutoModel.from_pretrained``
loads as a Wav2Vec2Model, HubertModel or Data2VecAudioModel giving this project's hidden
states (the transformer input, then every layer) on the same waveform.

What maps, piece by piece (the weights are copied, nothing is re-trained):

| here | transformers |
|---|---|
| conv feature encoder: group norm in the first layer / layer norm in every layer | ``feat_extract_norm`` "group" / "layer" (Data2VecAudioModel: always "layer") |
| conv kernels, strides, channels, bias, GELU/ReLU | ``conv_kernel``, ``conv_stride``, ``conv_dim``, ``conv_bias``, ``feat_extract_activation`` |
| feature layer norm + projection | ``feature_projection`` |
| one weight-normalised position conv (wav2vec 2.0, HuBERT) | ``num_conv_pos_embeddings`` (kernel), ``num_conv_pos_embedding_groups`` |
| data2vec's stack of N position convs (``conv_pos_layers=N``) | Data2VecAudioModel: ``num_conv_pos_embeddings`` = N, ``conv_pos_kernel_size`` |
| post-LN transformer, fused q/k/v split in three | ``do_stable_layer_norm=False``, ``q_proj``/``k_proj``/``v_proj``/``out_proj`` |
| the mask vector | ``masked_spec_embed`` |

What does not: the pre-training heads (wav2vec 2.0's quantizer and projections, HuBERT's
cluster embeddings, data2vec's regression head and EMA teacher) are not part of these
models and are left out. An encoder without an HF equivalent (another conv norm, log
compression, pre-LN, the tuning layers of speechssl/nn/peft.py, data2vec's position stack
without layer-norm convs) is an error naming it. data2vec with wav2vec 2.0's backbone (its
default here) has no Data2VecAudioModel form (that class has the paper's layer-norm convs
and position stack): it is written as the Wav2Vec2Model it is, and the export says so.

Before anything is written, the converted model runs on one second of noise next to ours;
a hidden state further than 1e-4 from ours stops the export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from speechssl.errors import SpeechSSLError
from speechssl.nn.conv_encoder import MaskedGroupNorm, _TimeLayerNorm
from speechssl.nn.transformer import ConvPositions, ConvPositionStack, TransformerEncoder
from speechssl.nn.wav2vec2_backbone import MaskedBackbone

# our upstream name -> transformers (config class, model class) for the wav2vec 2.0 form
CLASSES = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
           "hubert": ("HubertConfig", "HubertModel"),
           "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel")}
UPSTREAM_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "data2vec": "wav2vec2"}
TOLERANCE = 1e-4  # the export's own check; tests/test_hf_export.py holds it to 1e-5


@dataclass
class Conversion:
    """An upstream in transformers' terms: the model type, the config's fields, the state
    dict in transformers' names, and what the export leaves out or changes."""

    model_type: str
    config: dict
    state: dict[str, Tensor]
    notes: list[str] = field(default_factory=list)


def _activation(module: nn.Module, where: str) -> str:
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise SpeechSSLError(f"format=hf: the {where} activation {module!r} has no transformers "
                         f"equivalent here (gelu or relu)")


def _conv_encoder(backbone: MaskedBackbone) -> tuple[dict, dict[str, Tensor]]:
    """The conv feature encoder's config fields and weights."""
    enc = backbone.features
    if backbone.frontend != "conv":
        raise SpeechSSLError(f"format=hf: upstream.frontend={backbone.frontend} (stacked log-mel "
                             f"frames) has no transformers equivalent: its wav2vec2, hubert and "
                             f"data2vec classes read the waveform through the conv encoder")
    if enc.log_compression:
        raise SpeechSSLError("format=hf: the conv feature encoder's log compression (wav2vec, "
                             "2019) has no transformers equivalent")
    norms = [layer["norm"] for layer in enc.layers]
    if isinstance(norms[0], MaskedGroupNorm) and norms[0].num_groups == enc.channels and all(
            isinstance(n, nn.Identity) for n in norms[1:]):
        kind = "group"
    elif all(isinstance(n, _TimeLayerNorm) for n in norms):
        kind = "layer"
    else:
        raise SpeechSSLError(f"format=hf: the conv feature encoder's norms "
                             f"({', '.join(type(n).__name__ for n in norms)}) have no "
                             f"transformers equivalent: transformers has a per-channel group "
                             f"norm in the first layer (\"group\") or a layer norm in every "
                             f"layer (\"layer\")")
    bias = enc.layers[0]["conv"].bias is not None
    config = {"conv_dim": [enc.channels] * len(enc.kernels), "conv_kernel": list(enc.kernels),
              "conv_stride": list(enc.strides), "conv_bias": bias, "feat_extract_norm": kind,
              "feat_extract_activation": _activation(enc.act, "conv feature encoder")}
    state = {}
    for i, layer in enumerate(enc.layers):
        for name, t in layer["conv"].state_dict().items():
            state[f"feature_extractor.conv_layers.{i}.conv.{name}"] = t
        if kind == "layer" or i == 0:
            for name, t in layer["norm"].state_dict().items():
                state[f"feature_extractor.conv_layers.{i}.layer_norm.{name}"] = t
    return config, state


def _positions(transformer: TransformerEncoder) -> tuple[dict, dict[str, Tensor], bool]:
    """The position convs' config fields, weights, and whether they are data2vec's stack."""
    pos = transformer.pos_conv
    if isinstance(pos, ConvPositionStack):
        conv = pos.convs[0]
        config = {"num_conv_pos_embeddings": len(pos.convs),
                  "conv_pos_kernel_size": conv.kernel_size[0],
                  "num_conv_pos_embedding_groups": conv.groups}
        state = {f"encoder.pos_conv_embed.layers.{j}.conv.{n}": t
                 for j, c in enumerate(pos.convs) for n, t in c.state_dict().items()}
        return config, state, True
    if not isinstance(pos, ConvPositions):
        raise SpeechSSLError(f"format=hf: position module {type(pos).__name__} has no "
                             f"transformers equivalent")
    conv = pos.conv
    config = {"num_conv_pos_embeddings": conv.kernel_size[0],
              "num_conv_pos_embedding_groups": conv.groups}
    state = {f"encoder.pos_conv_embed.conv.{n}": t for n, t in conv.state_dict().items()}
    return config, state, False


def _layers(transformer: TransformerEncoder) -> tuple[dict, dict[str, Tensor]]:
    """The transformer layers' config fields and weights (q/k/v split out of the fused
    projection, in its q, k, v order)."""
    if transformer.norm_first:
        raise SpeechSSLError("format=hf: a pre-LN transformer is not what this backbone's "
                             "transformers classes hold here (do_stable_layer_norm=False only)")
    tuned = [n for n, m in transformer.named_modules() if n and (
        getattr(m, "adapter", None) is not None or getattr(m, "lora_qkv", None) is not None)]
    if tuned or transformer.prefix is not None or transformer.prompt is not None:
        raise SpeechSSLError("format=hf: the encoder carries tuning layers (adapters, LoRA, "
                             "prefixes or prompts: speechssl/nn/peft.py) that transformers' "
                             "models do not have; export the upstream before tuning")
    first = transformer.layers[0]
    D = first.attn.qkv.in_features
    config = {"hidden_size": D, "num_hidden_layers": len(transformer.layers),
              "num_attention_heads": first.attn.heads,
              "intermediate_size": first.ff[0].out_features,
              "hidden_act": _activation(first.ff[1], "feed-forward"),
              "attention_dropout": float(first.attn.dropout),
              "activation_dropout": float(first.ff[2].p), "hidden_dropout": float(first.drop.p),
              "layer_norm_eps": float(first.norm1.eps), "do_stable_layer_norm": False,
              "layerdrop": 0.0}
    state = {}
    for i, layer in enumerate(transformer.layers):
        p = f"encoder.layers.{i}."
        w, b = layer.attn.qkv.weight, layer.attn.qkv.bias
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            state[p + f"attention.{name}.weight"] = w[j * D:(j + 1) * D]
            state[p + f"attention.{name}.bias"] = b[j * D:(j + 1) * D]
        parts = {"attention.out_proj": layer.attn.out, "layer_norm": layer.norm1,
                 "feed_forward.intermediate_dense": layer.ff[0],
                 "feed_forward.output_dense": layer.ff[3], "final_layer_norm": layer.norm2}
        for hf_name, module in parts.items():
            for n, t in module.state_dict().items():
                state[p + f"{hf_name}.{n}"] = t
    return config, state


def convert(upstream: nn.Module, name: str) -> Conversion:
    """``upstream`` (wav2vec2, hubert or data2vec) in transformers' terms, or a
    SpeechSSLError naming what has no equivalent."""
    backbone = getattr(upstream, "backbone", None)
    if name not in UPSTREAM_TYPES or not isinstance(backbone, MaskedBackbone):
        raise SpeechSSLError(f"format=hf exports {', '.join(UPSTREAM_TYPES)} (the wav2vec 2.0 "
                             f"backbone); upstream {name!r} has no transformers form here "
                             f"(format=speechssl writes any upstream)")
    conv_cfg, conv_state = _conv_encoder(backbone)
    pos_cfg, pos_state, stack = _positions(backbone.context.transformer)
    layer_cfg, layer_state = _layers(backbone.context.transformer)
    model_type, notes = UPSTREAM_TYPES[name], []
    if stack:
        if name != "data2vec" or conv_cfg["feat_extract_norm"] != "layer":
            raise SpeechSSLError("format=hf: data2vec's stack of position convs exists in "
                                 "transformers only as Data2VecAudioModel, which has a layer norm "
                                 "in every conv layer: export with upstream.conv_norm=layer")
        model_type = "data2vec-audio"
        del conv_cfg["feat_extract_norm"]
    elif name == "data2vec":
        notes.append("data2vec with wav2vec 2.0's backbone (conv_norm=group_first, "
                     "conv_pos_layers=0) is written as a Wav2Vec2Model: transformers' "
                     "Data2VecAudioModel has the paper's layer-norm convs and 5 position convs "
                     "(upstream.conv_norm=layer upstream.conv_pos_layers=5 "
                     "upstream.conv_pos_kernel=19 builds that)")
    eps = {m.eps for m in (backbone.feature_norm, backbone.context.norm)}
    if eps != {layer_cfg["layer_norm_eps"]}:
        raise SpeechSSLError(f"format=hf: layer norms with different eps {sorted(eps)}; "
                             f"transformers has one layer_norm_eps")
    config = {**conv_cfg, **pos_cfg, **layer_cfg,
              "feat_proj_dropout": float(backbone.feature_drop.p),
              "mask_time_prob": float(backbone.mask_prob),
              "mask_time_length": int(backbone.mask_span),
              "apply_spec_augment": backbone.mask_prob > 0}
    state = {**conv_state, **pos_state, **layer_state}
    for hf_name, module in (("feature_projection.layer_norm", backbone.feature_norm),
                            ("feature_projection.projection", backbone.proj),
                            ("encoder.layer_norm", backbone.context.norm)):
        state.update({f"{hf_name}.{n}": t for n, t in module.state_dict().items()})
    if backbone.mask_prob > 0:  # transformers has the vector only when it masks
        state["masked_spec_embed"] = backbone.mask_emb.detach()
    heads = [n for n in ("quantizer", "project_q", "final_proj", "label_embs", "centroids",
                         "head", "teacher")
             if isinstance(getattr(upstream, n, None), nn.Module | Tensor)]
    if heads:
        notes.append(f"left out (pre-training only, not part of the transformers model): "
                     f"{', '.join(heads)}")
    return Conversion(model_type, config, {k: v.detach().clone().float().contiguous()
                                           for k, v in state.items()}, notes)


def build_hf_model(conv: Conversion):
    """The transformers model of a conversion, its weights loaded strictly, in eval mode."""
    from speechssl.upstream.hf import require_transformers

    transformers = require_transformers("format=hf")
    cfg_cls, model_cls = CLASSES[conv.model_type]
    config = getattr(transformers, cfg_cls)(**conv.config)
    model = getattr(transformers, model_cls)(config)
    missing, unexpected = model.load_state_dict(conv.state, strict=False)
    if missing or unexpected:  # a bug in the mapping, never a partial model
        raise SpeechSSLError(f"format=hf: {model_cls} and the converted weights differ: missing "
                             f"{missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


@torch.no_grad()
def check_same_hidden_states(upstream: nn.Module, model, tolerance: float = TOLERANCE) -> float:
    """Both models on one second of seeded noise: the largest difference of any hidden
    state; a SpeechSSLError beyond ``tolerance`` (or a different number of layers)."""
    n = int(upstream.sample_rate)
    wav = torch.randn(1, n, generator=torch.Generator().manual_seed(0)) * 0.1
    was_training = upstream.training
    upstream.eval()
    try:
        ours = upstream(wav, torch.tensor([n])).hidden_states
    finally:
        upstream.train(was_training)
    theirs = model(wav, output_hidden_states=True).hidden_states
    if len(ours) != len(theirs):
        raise SpeechSSLError(f"format=hf: {len(theirs)} hidden states from transformers, "
                             f"{len(ours)} here")
    worst = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))
    if worst > tolerance:
        raise SpeechSSLError(f"format=hf: the converted model's hidden states differ from "
                             f"ours by {worst:.2e} (> {tolerance:g}); nothing was written")
    return worst


def save_hf(upstream: nn.Module, name: str, out_dir: str | Path,
            provenance: dict | None = None) -> tuple[Path, Conversion]:
    """Convert, check, and write ``out_dir`` with ``save_pretrained`` (safetensors), a
    Wav2Vec2FeatureExtractor (the upstream's sample rate, no input normalisation: ours reads
    the waveform as it is) and ``speechssl.json`` (where the weights came from, the notes)."""
    from speechssl.upstream.hf import require_transformers

    transformers = require_transformers("format=hf")
    conv = convert(upstream, name)
    model = build_hf_model(conv)
    check_same_hidden_states(upstream, model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # model.safetensors
    layer_norm_convs = conv.config.get("feat_extract_norm", "layer") == "layer"
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=int(upstream.sample_rate), padding_value=0.0,
        do_normalize=False, return_attention_mask=layer_norm_convs).save_pretrained(out)
    info = {"upstream": name, "model_type": conv.model_type, "notes": conv.notes,
            **(provenance or {})}
    (out / "speechssl.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return out, conv
