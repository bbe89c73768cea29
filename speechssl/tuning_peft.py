"""Parameter-efficient tuning of transformers and torchaudio checkpoints (``upstream=hf``,
``upstream=torchaudio``) with HuggingFace's peft library (Mangrulkar et al., 2022, "PEFT:
State-of-the-art Parameter-Efficient Fine-Tuning methods"). The upstreams built on
speechssl's own TransformerEncoder keep their own layers (speechssl/nn/peft.py).

- lora (Hu et al., 2021): peft's LoRA layers on the q, k, v and output projections of every
  attention layer, named per model family in :data:`LORA_TARGETS`; rank, alpha and dropout
  are the ``tuning.*`` options. A (random) and B (zero) train, W stays frozen, so the tuned
  model starts exactly where the checkpoint was.
- prompt, prefix: peft's prompt and prefix tuning need a model that reads input embeddings
  (prompt) or past key/values (prefix); the audio encoders read waveforms and take neither
  (peft's PromptTuning / PrefixTuning fail on them). peft does run them on some BERT-family
  text encoders, but its feature-extraction forward drops ``token_type_ids``, so sentence
  pairs (nli, qa) would lose their segments: not offered for transformers checkpoints.
- adapter: peft has no Houlsby bottleneck adapters; ``tuning=adapter`` is for speechssl's
  TransformerEncoder.
"""

from __future__ import annotations

from torch import nn

from speechssl.errors import ConfigError
from speechssl.extras import require

_W2V = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj")
_BERT = ("attention.self.query", "attention.self.key", "attention.self.value",
         "attention.output.dense")
# model family (a transformers model_type, or "torchaudio") -> the module-name suffixes of its
# attention projections (peft's target_modules)
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "wav2vec2": _W2V, "hubert": _W2V, "data2vec-audio": _W2V,
    "torchaudio": _W2V,  # torchaudio's wav2vec 2.0 / HuBERT SelfAttention
    "bert": _BERT, "roberta": _BERT, "electra": _BERT, "xlm-roberta": _BERT,
    "camembert": _BERT, "data2vec-text": _BERT,
    "albert": ("attention.query", "attention.key", "attention.value", "attention.dense"),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),
    "deberta": ("attention.self.in_proj", "attention.output.dense"),  # q/k/v fused
    "deberta-v2": ("attention.self.query_proj", "attention.self.key_proj",
                   "attention.self.value_proj", "attention.output.dense"),
}
# families peft's LoRA cannot reach, and why
NO_LORA = {
    "wavlm": "WavLM's attention reads its q/k/v/output weights directly (torch's "
             "multi_head_attention_forward), so LoRA layers on those projections would never run",
}
WHY_NOT = {
    "adapter": "peft has no bottleneck adapters; tuning=adapter is for speechssl's "
               "TransformerEncoder",
    "prefix": "peft's prefix tuning passes past key/values, which audio encoders (reading "
              "waveforms) do not take, and drops a text encoder's token_type_ids (sentence pairs)",
    "prompt": "peft's prompt tuning prepends input embeddings, which audio encoders (reading "
              "waveforms) do not take, and drops a text encoder's token_type_ids (sentence pairs)",
}


def require_peft(what: str):
    """The peft module, or a ConfigError naming the extra that installs it."""
    return require("peft", "hf", what)


def family(upstream: nn.Module) -> str | None:
    """The model family of a peft-tunable upstream (``peft_family()``), else None."""
    get = getattr(upstream, "peft_family", None)
    return get() if callable(get) else None


def peft_modes(upstream: nn.Module) -> tuple[str, ...]:
    """The parameter-efficient modes peft gives ``upstream``: lora where its family's attention
    projections are known and reachable; none otherwise."""
    fam = family(upstream)
    return ("lora",) if fam in LORA_TARGETS else ()


def why_not(upstream: nn.Module | None, mode: str) -> str:
    """Why peft cannot give ``upstream`` (None: its class) the parameter-efficient ``mode``."""
    fam = None if upstream is None else family(upstream)
    if mode == "lora":
        return NO_LORA.get(fam, f"no LoRA targets are known for model family {fam!r}; known: "
                                f"{', '.join(LORA_TARGETS)}")
    return WHY_NOT.get(mode, f"peft does not provide tuning={mode} here")


def install_lora(upstream: nn.Module, opts: dict) -> list[nn.Parameter]:
    """peft's LoRA layers in ``upstream.peft_model()``'s attention projections, in place;
    returns their parameters. A ConfigError when no module matches."""
    peft = require_peft("tuning=lora on a transformers / torchaudio upstream")
    model, fam = upstream.peft_model(), family(upstream)
    targets = LORA_TARGETS[fam]
    config = peft.LoraConfig(r=int(opts["rank"]), lora_alpha=float(opts["alpha"]),
                             lora_dropout=float(opts["dropout"]), target_modules=list(targets),
                             bias="none")
    try:
        peft.inject_adapter_in_model(config, model)
    except ValueError as e:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(f"tuning=lora: no module of this {fam} model matches "
                          f"{', '.join(targets)} ({e})") from None
    return [p for n, p in model.named_parameters() if ".lora_" in n]
