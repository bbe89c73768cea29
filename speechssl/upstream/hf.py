"""HuggingFace transformers models read from a local directory (Wolf et al., 2020,
"Transformers: State-of-the-Art Natural Language Processing"): wav2vec 2.0, HuBERT, WavLM,
data2vec-audio, and the BERT family for text; every hidden state is a layer."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream

AUDIO_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
TEXT_TYPES = ("bert", "roberta", "albert", "distilbert", "electra", "xlm-roberta", "camembert",
              "deberta", "deberta-v2", "data2vec-text")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")


def require_transformers(what: str):
    """The transformers module, or a ConfigError saying how to install the extra."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{what} needs the optional dependency transformers: "
                          f"pip install -e '.[hf]'") from None
    return transformers


def local_model_dir(path, key: str) -> Path:
    """``path`` must be an existing local directory holding config.json (no downloads)."""
    if not path:
        raise ConfigError(f"{key} is not set: give a local directory written by "
                          f"save_pretrained (config.json + weights); nothing is downloaded")
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{key}={path}: not a local directory (models are never downloaded; "
                          f"save one with save_pretrained or huggingface-cli download first)")
    if not (root / "config.json").is_file():
        raise ConfigError(f"{key}={path}: no config.json in that directory")
    return root


def files_hash(path: str | Path, n: int = 12) -> str:
    """sha256 over the model files of a directory (names and bytes, sorted), or of one file."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:n]


def zero_mean_unit_var(wav: Tensor, eps: float = 1e-7) -> Tensor:
    """(S,) -> (S,) normalized as Wav2Vec2FeatureExtractor does (population variance)."""
    return (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + eps)


def check_model_type(model_type: str | None, key: str, root: Path) -> None:
    if model_type not in AUDIO_TYPES + TEXT_TYPES:
        raise ConfigError(f"{key}={root}: model_type {model_type!r} is not supported; supported: "
                          f"{', '.join(AUDIO_TYPES)} (audio), {', '.join(TEXT_TYPES)} (text)")


def check_model_dir(path, key: str) -> str | None:
    """The checks of :func:`load_hf_model` that read only config.json (config validation
    loads no weights); returns the model_type."""
    root = local_model_dir(path, key)
    require_transformers(f"{key}={root}")
    try:
        model_type = json.loads((root / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}={path}: unreadable config.json ({e})") from None
    check_model_type(model_type, key, root)
    return model_type


def load_hf_model(root: Path, key: str):
    """(model, config) from a local directory; weights as safetensors, or pickles only
    through torch.load(weights_only=True); custom code in the directory is never run."""
    transformers = require_transformers(f"{key}={root}")
    config = transformers.AutoConfig.from_pretrained(root, local_files_only=True)
    check_model_type(getattr(config, "model_type", None), key, root)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # one line per load is noise in a cell
    try:
        model = transformers.AutoModel.from_pretrained(
            root, local_files_only=True, trust_remote_code=False, weights_only=True)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.float().eval(), config


def pad_layers(per_utt: list[list[Tensor]]) -> tuple[list[Tensor], Tensor]:
    """Per utterance [(1, T_i, D)] * L -> [(B, T_max, D)] * L zero padded, and (B,) T_i."""
    lengths = torch.tensor([u[0].shape[1] for u in per_utt], device=per_utt[0][0].device)
    layers = [nn.utils.rnn.pad_sequence([u[i][0] for u in per_utt], batch_first=True)
              for i in range(len(per_utt[0]))]
    return layers, lengths


@register_upstream("hf")
class HFUpstream(Upstream):
    """A transformers model from ``path`` (a local save_pretrained directory).

    Audio (wav2vec2, hubert, wavlm, data2vec-audio): waveforms (B, S) at the feature
    extractor's ``sampling_rate``, normalized per utterance when its ``do_normalize`` is
    set (``normalize`` overrides); hidden states are the model's own ``hidden_states``
    (the transformer input, then every layer), one frame per prod(conv_stride) samples.
    Text (BERT family): token ids (B, T) long; hidden states are the embeddings and every
    layer, one per token. ``batched=false`` (the audio default) runs each utterance alone,
    exactly as the model runs unpadded; ``batched=true`` pads and passes an attention mask
    when the feature extractor asks for one (faster on a GPU; group-norm models such as
    wav2vec2-base then see the padding, so frames can change with the batch).
    """

    # weights from its own files (no scratch); lora through peft (speechssl/tuning_peft.py)
    tuning_modes = ("frozen", "full", "lora")

    @classmethod
    def check_options(cls, path: str | None = None, normalize: bool | None = None,
                      batched: bool | None = None) -> None:
        check_model_dir(path, "upstream.path")

    def __init__(self, path: str | None = None, normalize: bool | None = None,
                 batched: bool | None = None):
        super().__init__()
        self.path = local_model_dir(path, "upstream.path")
        self.model, config = load_hf_model(self.path, "upstream.path")
        self.model_type = config.model_type
        self.modality = "audio" if config.model_type in AUDIO_TYPES else "text"
        self._hash: str | None = None
        if self.modality == "text":
            self.downsample_rate = 1
            self.vocab_size = int(config.vocab_size)
            self.pad_token_id = getattr(config, "pad_token_id", None)
            self.use_segments = int(getattr(config, "type_vocab_size", 0) or 0) > 1
            self.max_positions = int(getattr(config, "max_position_embeddings", 512) or 512)
            self._text_tokenizer = None
            self._sep_id: int | None = None
            self.batched = True if batched is None else bool(batched)
            self.normalize, self.use_mask = False, True
            return
        # a tuned upstream runs in train mode (dropout on): transformers would also drop whole
        # layers (layerdrop: fewer hidden states than the featurizer weighs) and mask frames
        # (SpecAugment); neither is part of a layer's features, as in speechssl's own models
        self.model.config.layerdrop = 0.0
        self.model.config.apply_spec_augment = False
        fe = self._feature_extractor_settings()
        self.sample_rate = int(fe["sampling_rate"])
        self.normalize = bool(fe["do_normalize"] if normalize is None else normalize)
        self.use_mask = bool(fe["return_attention_mask"])
        self.batched = False if batched is None else bool(batched)
        self.downsample_rate = math.prod(int(s) for s in config.conv_stride)

    def _feature_extractor_settings(self) -> dict:
        if not (self.path / "preprocessor_config.json").is_file():
            warnings.warn(f"upstream.path={self.path}: no preprocessor_config.json; using the "
                          f"wav2vec2 feature extractor defaults (16 kHz, do_normalize=true)",
                          stacklevel=3)
            return {"sampling_rate": 16000, "do_normalize": True, "return_attention_mask": False}
        fe = require_transformers("upstream=hf").AutoFeatureExtractor.from_pretrained(
            self.path, local_files_only=True)
        return {"sampling_rate": fe.sampling_rate, "do_normalize": getattr(fe, "do_normalize", False),
                "return_attention_mask": getattr(fe, "return_attention_mask", False)}

    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = files_hash(self.path)
        return self._hash

    def peft_family(self) -> str:
        """The model family peft's layers are placed by (speechssl/tuning_peft.py)."""
        return self.model_type

    def peft_model(self) -> nn.Module:
        """The module peft's layers go into."""
        return self.model

    def forward(self, x: Tensor, lengths: Tensor) -> UpstreamOutput:
        """x: (B, S) float waveforms or (B, T) long token ids; lengths (B,)."""
        run = self._audio if self.modality == "audio" else self._text
        if self.batched:
            layers, out_lengths = run(x, lengths)
            return UpstreamOutput(hidden_states=layers, lengths=out_lengths)
        per_utt = [run(x[i: i + 1, : int(n)], lengths[i: i + 1])[0] for i, n in enumerate(lengths)]
        layers, out_lengths = pad_layers(per_utt)
        return UpstreamOutput(hidden_states=layers, lengths=out_lengths)

    def _audio(self, wavs: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        valid = valid_mask(lengths, wavs.shape[1])  # (B, S)
        wavs = wavs.float() * valid
        if self.normalize:
            wavs = wavs.clone()
            for i, n in enumerate(lengths.tolist()):
                wavs[i, :n] = zero_mean_unit_var(wavs[i, :n])
        mask = valid.long() if self.use_mask and self.batched else None
        out = self.model(wavs, attention_mask=mask, output_hidden_states=True)
        frames = self.model._get_feat_extract_output_lengths(lengths).long()
        frames = frames.clamp(max=out.hidden_states[0].shape[1])
        return list(out.hidden_states), frames

    def _text(self, ids: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        valid = valid_mask(lengths, ids.shape[1])  # (B, T)
        ids = ids.long()
        if self.pad_token_id is not None:
            ids = ids.masked_fill(~valid, int(self.pad_token_id))
        extra = {}
        if self.use_segments and self._segment_sep() is not None:
            from speechssl.upstream.bert import segment_ids

            extra["token_type_ids"] = segment_ids(ids, self._segment_sep()) * valid
        out = self.model(input_ids=ids, attention_mask=valid.long(), output_hidden_states=True,
                         **extra)
        return list(out.hidden_states), lengths.long()

    def _segment_sep(self) -> int | None:
        """The [SEP] id that starts segment 1 (BERT-style pairs), when the directory has a
        tokenizer; None (all segment ids 0) otherwise."""
        if self._sep_id is None:
            try:
                self._sep_id = self.text_tokenizer.sep_id if self.text_tokenizer.sep_id is not None \
                    else -1
            except ConfigError:
                self._sep_id = -1
        return None if self._sep_id < 0 else self._sep_id

    @property
    def text_tokenizer(self):
        """The directory's fast tokenizer as a TextTokenizer (text models only)."""
        if self.modality != "text":
            raise ConfigError(f"upstream.path={self.path}: an audio model has no tokenizer")
        if self._text_tokenizer is None:
            from speechssl.text.tokenizer import hf_text_tokenizer

            self._text_tokenizer = hf_text_tokenizer(self.path, self.max_positions)
        return self._text_tokenizer

    def encode(self, item: dict):
        """Text models: one manifest item (``text`` [+ ``text_pair``], or ``words``) ->
        Encoded token ids with word ids and character offsets (speechssl.text.tokenizer)."""
        return self.text_tokenizer.encode(item)

    @property
    def pad_id(self) -> int:
        return int(self.pad_token_id) if self.pad_token_id is not None else 0

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Text models: strings -> token ids (B, T) long, lengths (B,), with the directory's
        own tokenizer (special tokens included)."""
        if self.modality != "text":
            raise ConfigError(f"upstream.path={self.path}: an audio model has no tokenizer")
        tok = require_transformers("upstream=hf").AutoTokenizer.from_pretrained(
            self.path, local_files_only=True)
        enc = tok(texts, padding=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].sum(-1)

    @torch.no_grad()
    def describe(self) -> dict:
        if self.modality == "audio":
            return super().describe()
        out = self(torch.zeros(1, 8, dtype=torch.long), torch.tensor([8]))
        return {"num_layers": len(out.hidden_states), "hidden_size": out.hidden_states[0].shape[-1]}
