"""The wav2vec 2.0 backbone: Baevski, Zhou, Mohamed and Auli, 2020, "wav2vec 2.0: A Framework
for Self-Supervised Learning of Speech Representations"; shared by wav2vec 2.0, HuBERT and
data2vec (speechssl/upstream/).

Conv feature encoder (stride 320) -> layer norm -> dropout -> projection -> time masking
(masked frames get one learned vector) -> transformer with convolutional relative positions.
``frontend="fbank"`` replaces the conv feature encoder with stacked log-mel frames
(MelHuBERT, Lin et al., 2023: far less compute per second of audio, for CPU budgets).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.conv_encoder import WAV2VEC2_KERNELS, WAV2VEC2_STRIDES, ConvFeatureEncoder
from speechssl.nn.frontend import StackedLogMel
from speechssl.nn.masking import valid_mask, wav2vec2_mask
from speechssl.nn.random import generator_from_global
from speechssl.nn.transformer import TransformerEncoder


class ContextNetwork(nn.Module):
    """The transformer half of wav2vec 2.0 / HuBERT / data2vec (post-LN, BERT-base style):
    x + conv positions -> layer norm -> dropout -> layers.
    (B, T, D) and key padding (B, T) -> [input after the layer norm, each layer's output]."""

    def __init__(self, dim: int, num_layers: int, heads: int, ff_dim: int, dropout: float,
                 attention_dropout: float, conv_pos_kernel: int, conv_pos_groups: int,
                 conv_pos_layers: int = 0):
        super().__init__()
        self.transformer = TransformerEncoder(dim, num_layers, heads, ff_dim, dropout,
                                              attention_dropout, norm_first=False,
                                              position="conv", conv_pos_kernel=conv_pos_kernel,
                                              conv_pos_groups=conv_pos_groups,
                                              conv_pos_layers=conv_pos_layers)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding: Tensor, ffn_out: list | None = None) -> list[Tensor]:
        """``ffn_out``: a list that receives each layer's feed-forward output before its
        residual sum (zero at padding), as TransformerEncoder gives it."""
        if not bool(key_padding.any()):  # nothing padded: no masks at all
            x = self.norm(self.transformer.add_positions(x))
            return [x] + self.transformer(self.drop(x), ffn_out=ffn_out)
        x = self.norm(self.transformer.add_positions(x, key_padding))
        keep = (~key_padding).unsqueeze(-1)
        x = x * keep
        ffs = [] if ffn_out is not None else None
        outs = [x] + [h * keep for h in self.transformer(self.drop(x), key_padding, ffs)]
        if ffn_out is not None:
            ffn_out.extend(f * keep for f in ffs)
        return outs


FRONTENDS = ("conv", "fbank")


class MaskedBackbone(nn.Module):
    """Waveform -> conv features -> (optionally masked) transformer; shared by wav2vec 2.0,
    HuBERT and data2vec. Sizes of BASE: conv 512, dim 768, 12 layers, 12 heads, ff 3072.
    ``conv_norm``: "group_first" (wav2vec 2.0, HuBERT) or "layer" (data2vec: a layer norm
    in every conv layer); ``conv_pos_layers``: 0 = wav2vec 2.0's one weight-normalised
    position conv, N = data2vec's N convs of kernel ``conv_pos_kernel``. ``frontend``:
    "conv" (the papers') or "fbank" (:class:`StackedLogMel`: ``mel_stack`` frames of
    ``mel_bins`` log-mel with corpus CMVN, ``160 * mel_stack`` samples per frame; the conv_*
    options are then unused)."""

    def __init__(self, conv_dim: int = 512, conv_kernels=WAV2VEC2_KERNELS,
                 conv_strides=WAV2VEC2_STRIDES, conv_norm: str = "group_first",
                 hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 ff_size: int = 3072, dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.1, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, mask_prob: float = 0.065, mask_span: int = 10,
                 feature_grad_mult: float = 1.0, conv_pos_layers: int = 0,
                 frontend: str = "conv", mel_bins: int = 80, mel_stack: int = 2):
        super().__init__()
        if not 0.0 <= mask_prob <= 1.0 or mask_span < 1:
            raise ConfigError(f"upstream.mask_prob={mask_prob} must be in [0, 1] and "
                              f"upstream.mask_span={mask_span} >= 1")
        if frontend not in FRONTENDS:
            raise ConfigError(f"upstream.frontend={frontend!r}; valid: {', '.join(FRONTENDS)}")
        if frontend == "conv":
            self.features = ConvFeatureEncoder(conv_dim, conv_kernels, conv_strides, norm=conv_norm)
        else:
            self.features = StackedLogMel(mel_bins, mel_stack)
        self.frontend = frontend
        dim = self.features.channels
        self.feature_norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, hidden_size)
        self.feature_drop = nn.Dropout(feature_dropout)
        self.mask_emb = nn.Parameter(torch.empty(hidden_size).uniform_())
        self.context = ContextNetwork(hidden_size, num_layers, num_heads, ff_size, dropout,
                                      attention_dropout, conv_pos_kernel, conv_pos_groups,
                                      conv_pos_layers)
        self.mask_prob, self.mask_span = mask_prob, mask_span
        self.feature_grad_mult = feature_grad_mult

    def feature_penalty(self, raw: Tensor, valid: Tensor) -> Tensor:
        """The papers' L2 penalty on the conv encoder's output (B, T, C) at ``valid`` frames;
        0 for the log-mel front-end, which learns nothing."""
        if self.frontend != "conv":
            return raw.new_zeros((), dtype=torch.float32)
        return raw[valid].float().pow(2).mean()

    def encode(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, S) -> raw conv features (B, T, C) (for the feature penalty), layer-normed ones
        (B, T, C), projected (B, T, D), frames (B,). The encoder's gradient is scaled by
        ``feature_grad_mult`` (0.1 in the paper's BASE)."""
        raw, n = self.features(wavs, lengths)
        m = self.feature_grad_mult
        if m != 1.0 and torch.is_grad_enabled():
            raw = raw * m + raw.detach() * (1.0 - m)
        feats = self.feature_norm(raw)
        return raw, feats, self.proj(self.feature_drop(feats)), n

    def mask(self, n: Tensor, T: int) -> Tensor:
        return wav2vec2_mask(n, self.mask_prob, self.mask_span, generator_from_global(), max_len=T)

    def contextualize(self, x: Tensor, n: Tensor, mask: Tensor | None = None,
                      context: nn.Module | None = None,
                      ffn_out: list | None = None) -> list[Tensor]:
        """x: (B, T, D) projected features; mask (B, T) frames to replace by the mask vector.
        ``context`` overrides the context network (data2vec's EMA teacher); ``ffn_out`` (a
        list) receives each layer's feed-forward output before its residual sum."""
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        pad = ~valid_mask(n, x.shape[1])
        return (self.context if context is None else context)(x, pad, ffn_out)
