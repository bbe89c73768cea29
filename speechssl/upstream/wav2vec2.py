"""wav2vec 2.0: Baevski, Zhou, Mohamed and Auli, 2020, "wav2vec 2.0: A Framework for
Self-Supervised Learning of Speech Representations".

Conv feature encoder (7 layers, stride 320: 20 ms frames) -> layer norm -> projection ->
time masking (span starts with probability p = 0.065, span 10; masked frames get one
learned vector) -> transformer with convolutional relative positions (kernel 128, 16
groups) -> projection to ``final_dim``. Targets: the unmasked encoder features quantized by a
product quantizer (G = 2 groups x V = 320 entries, Gumbel-softmax, temperature 2 -> 0.5 by
x 0.999995 per update) and projected to ``final_dim``. Loss: cross-entropy of the cosine
similarity / kappa (0.1) of the true quantized target against K = 100 distractors drawn
from the other masked frames of the same utterance, + alpha (0.1) x diversity loss
(GV - perplexity) / GV, + 10 x the L2 penalty on the encoder features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.contrastive import contrastive_logits, gather_frames, info_nce, sample_negatives
from speechssl.nn.conv_encoder import (
    WAV2VEC2_KERNELS,
    WAV2VEC2_STRIDES,
    ConvFeatureEncoder,
    frame_mask,
)
from speechssl.nn.masking import wav2vec2_mask
from speechssl.nn.quantize import GumbelQuantizer
from speechssl.nn.transformer import TransformerEncoder
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream
from speechssl.upstream.cpc import _generator


class ContextNetwork(nn.Module):
    """The transformer half of wav2vec 2.0 / HuBERT / data2vec (post-LN, BERT-base style):
    x + conv positions -> layer norm -> dropout -> layers.
    (B, T, D) and key padding (B, T) -> [input after the layer norm, each layer's output]."""

    def __init__(self, dim: int, num_layers: int, heads: int, ff_dim: int, dropout: float,
                 attention_dropout: float, conv_pos_kernel: int, conv_pos_groups: int):
        super().__init__()
        self.transformer = TransformerEncoder(dim, num_layers, heads, ff_dim, dropout,
                                              attention_dropout, norm_first=False,
                                              position="conv", conv_pos_kernel=conv_pos_kernel,
                                              conv_pos_groups=conv_pos_groups)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding: Tensor) -> list[Tensor]:
        if not bool(key_padding.any()):  # nothing padded: no masks at all
            x = self.norm(self.transformer.add_positions(x))
            return [x] + self.transformer(self.drop(x))
        x = self.norm(self.transformer.add_positions(x, key_padding))
        keep = (~key_padding).unsqueeze(-1)
        x = x * keep
        return [x] + [h * keep for h in self.transformer(self.drop(x), key_padding)]


class MaskedBackbone(nn.Module):
    """Waveform -> conv features -> (optionally masked) transformer; shared by wav2vec 2.0,
    HuBERT and data2vec. Sizes of BASE: conv 512, dim 768, 12 layers, 12 heads, ff 3072."""

    def __init__(self, conv_dim: int = 512, conv_kernels=WAV2VEC2_KERNELS,
                 conv_strides=WAV2VEC2_STRIDES, conv_norm: str = "group_first",
                 hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 ff_size: int = 3072, dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.1, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, mask_prob: float = 0.065, mask_span: int = 10,
                 feature_grad_mult: float = 1.0):
        super().__init__()
        if not 0.0 <= mask_prob <= 1.0 or mask_span < 1:
            raise ConfigError(f"upstream.mask_prob={mask_prob} must be in [0, 1] and "
                              f"upstream.mask_span={mask_span} >= 1")
        self.features = ConvFeatureEncoder(conv_dim, conv_kernels, conv_strides, norm=conv_norm)
        self.feature_norm = nn.LayerNorm(conv_dim)
        self.proj = nn.Linear(conv_dim, hidden_size)
        self.feature_drop = nn.Dropout(feature_dropout)
        self.mask_emb = nn.Parameter(torch.empty(hidden_size).uniform_())
        self.context = ContextNetwork(hidden_size, num_layers, num_heads, ff_size, dropout,
                                      attention_dropout, conv_pos_kernel, conv_pos_groups)
        self.mask_prob, self.mask_span = mask_prob, mask_span
        self.feature_grad_mult = feature_grad_mult

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
        return wav2vec2_mask(n, self.mask_prob, self.mask_span, _generator(), max_len=T)

    def contextualize(self, x: Tensor, n: Tensor, mask: Tensor | None = None,
                      context: nn.Module | None = None) -> list[Tensor]:
        """x: (B, T, D) projected features; mask (B, T) frames to replace by the mask vector.
        ``context`` overrides the context network (data2vec's EMA teacher)."""
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        pad = ~frame_mask(n, x.shape[1])
        return (self.context if context is None else context)(x, pad)


BACKBONE_DEFAULTS = dict(conv_dim=512, conv_kernels=WAV2VEC2_KERNELS, conv_strides=WAV2VEC2_STRIDES)


@register_upstream("wav2vec2")
class Wav2Vec2(Upstream):
    """Hidden states: the transformer input (after conv positions and layer norm) and each
    transformer layer, all ``hidden_size`` wide, 320 samples per frame."""

    contract_options = {"conv_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                        "ff_size": 64, "conv_pos_kernel": 8, "conv_pos_groups": 4, "final_dim": 16,
                        "codebook_size": 16, "num_negatives": 5}  # tests

    def __init__(self, conv_dim: int = 512, conv_kernels: list[int] = WAV2VEC2_KERNELS,
                 conv_strides: list[int] = WAV2VEC2_STRIDES, hidden_size: int = 768,
                 num_layers: int = 12, num_heads: int = 12, ff_size: int = 3072,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.1, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, mask_prob: float = 0.065, mask_span: int = 10,
                 final_dim: int = 256, codebook_groups: int = 2, codebook_size: int = 320,
                 temperature: list[float] = (2.0, 0.5, 0.999995), num_negatives: int = 100,
                 logit_temp: float = 0.1, diversity_weight: float = 0.1,
                 feature_penalty: float = 10.0, feature_grad_mult: float = 0.1):
        super().__init__()
        if num_negatives < 1:
            raise ConfigError(f"upstream.num_negatives={num_negatives} must be >= 1")
        self.backbone = MaskedBackbone(conv_dim, conv_kernels, conv_strides, "group_first",
                                       hidden_size, num_layers, num_heads, ff_size, dropout,
                                       attention_dropout, feature_dropout, conv_pos_kernel,
                                       conv_pos_groups, mask_prob, mask_span, feature_grad_mult)
        self.downsample_rate = self.backbone.features.stride
        if final_dim % codebook_groups:
            raise ConfigError(f"upstream.final_dim={final_dim} is not divisible by "
                              f"upstream.codebook_groups={codebook_groups}")
        self.quantizer = GumbelQuantizer(conv_dim, codebook_size, final_dim, codebook_groups,
                                         tuple(temperature), init_std=1.0)
        self.project_q = nn.Linear(final_dim, final_dim)
        self.final_proj = nn.Linear(hidden_size, final_dim)
        self.num_negatives, self.logit_temp = num_negatives, logit_temp
        self.diversity_weight, self.feature_penalty = diversity_weight, feature_penalty
        self.num_vars = codebook_groups * codebook_size

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        _, _, x, n = self.backbone.encode(wavs, lengths)
        return UpstreamOutput(hidden_states=self.backbone.contextualize(x, n), lengths=n)

    @torch.no_grad()
    def codes(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Quantizer ids (B, T, G) of the unmasked features (-1 at padding), frames (B,)."""
        _, feats, _, n = self.backbone.encode(wavs, lengths)
        codes = self.quantizer(feats, frame_mask(n, feats.shape[1]))["codes"]
        return codes.masked_fill(~frame_mask(n, codes.shape[1]).unsqueeze(-1), -1), n

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        raw, feats, x, n = self.backbone.encode(wavs, lengths)
        valid = frame_mask(n, x.shape[1])
        penalty = raw[valid].float().pow(2).mean()
        mask = self.backbone.mask(n, x.shape[1])
        c = self.final_proj(self.backbone.contextualize(x, n, mask)[-1])
        vq = self.quantizer(feats, valid)
        q = self.project_q(vq["quantized"])
        neg_idx = sample_negatives(mask, self.num_negatives, _generator())  # other masked frames
        logits = contrastive_logits(c[mask], q[mask], gather_frames(q, neg_idx[mask]),
                                    "cosine", self.logit_temp, mask_identical=True)
        contrastive, acc = info_nce(logits)
        diversity = (self.num_vars - vq["prob_perplexity"]) / self.num_vars
        loss = (contrastive + self.diversity_weight * diversity
                + self.feature_penalty * penalty)
        return {"loss": loss, "contrastive": contrastive.detach(), "accuracy": acc,
                "diversity": diversity.detach(), "feature_penalty": penalty.detach(),
                "code_perplexity": vq["code_perplexity"].detach(),
                "temperature": torch.tensor(self.quantizer.temperature)}
