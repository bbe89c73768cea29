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
from speechssl.nn.conv_encoder import WAV2VEC2_KERNELS, WAV2VEC2_STRIDES
from speechssl.nn.masking import valid_mask
from speechssl.nn.quantize import GumbelQuantizer
from speechssl.nn.random import generator_from_global
from speechssl.nn.wav2vec2_backbone import MaskedBackbone
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream


@register_upstream("wav2vec2")
class Wav2Vec2(Upstream):
    """Hidden states: the transformer input (after conv positions and layer norm) and each
    transformer layer, all ``hidden_size`` wide, 320 samples per frame."""

    tuning_modes = TRANSFORMER_TUNING

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
                 feature_penalty: float = 10.0, feature_grad_mult: float = 0.1,
                 frontend: str = "conv", mel_bins: int = 80, mel_stack: int = 2):
        super().__init__()
        if num_negatives < 1:
            raise ConfigError(f"upstream.num_negatives={num_negatives} must be >= 1")
        self.backbone = MaskedBackbone(conv_dim, conv_kernels, conv_strides, "group_first",
                                       hidden_size, num_layers, num_heads, ff_size, dropout,
                                       attention_dropout, feature_dropout, conv_pos_kernel,
                                       conv_pos_groups, mask_prob, mask_span, feature_grad_mult,
                                       frontend=frontend, mel_bins=mel_bins, mel_stack=mel_stack)
        self.downsample_rate = self.backbone.features.stride
        if final_dim % codebook_groups:
            raise ConfigError(f"upstream.final_dim={final_dim} is not divisible by "
                              f"upstream.codebook_groups={codebook_groups}")
        self.quantizer = GumbelQuantizer(self.backbone.features.channels, codebook_size, final_dim, codebook_groups,
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
        codes = self.quantizer(feats, valid_mask(n, feats.shape[1]))["codes"]
        return codes.masked_fill(~valid_mask(n, codes.shape[1]).unsqueeze(-1), -1), n

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        raw, feats, x, n = self.backbone.encode(wavs, lengths)
        valid = valid_mask(n, x.shape[1])
        penalty = self.backbone.feature_penalty(raw, valid)
        mask = self.backbone.mask(n, x.shape[1])
        c = self.final_proj(self.backbone.contextualize(x, n, mask)[-1])
        vq = self.quantizer(feats, valid)
        q = self.project_q(vq["quantized"])
        # distractors: other masked frames of the same utterance
        neg_idx = sample_negatives(mask, self.num_negatives, generator_from_global())
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
