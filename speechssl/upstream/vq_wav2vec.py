"""vq-wav2vec: Baevski, Schneider and Auli, 2020, "vq-wav2vec: Self-Supervised Learning of
Discrete Speech Representations".

wav2vec (conv encoder, causal conv context, binary contrastive loss over K = 8 steps with
10 distractors from the same sequence) with a quantizer between encoder and context: the
dense z (512) is replaced by ẑ, G = 2 groups of V = 320 entries each, chosen either by
Gumbel-softmax (hard one-hot forward, temperature annealed from 2 to 0.5; logits from a
two-layer projection and one codebook shared by the groups, as fairseq's recipe: --vq-depth 2
--combine-groups; ``vq_depth=1`` is a single N(0, 1) layer, as wav2vec 2.0) or by online
k-means (nearest entry of a per-group-normalised z, straight-through, loss ||sg(z) - ẑ||^2 + gamma ||z - sg(ẑ)||^2,
gamma = 0.25). The context network reads ẑ and the loss predicts future ẑ (wav2vec's binary
loss, or ``loss="infonce"``, where a collapsed codebook scores chance instead of a low
loss). ``codes`` gives the discrete ids (B, T, G).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.contrastive import sample_negatives
from speechssl.nn.conv_encoder import (
    CPC_KERNELS,
    CPC_STRIDES,
    ConvFeatureEncoder,
    MaskedGroupNorm,
)
from speechssl.nn.masking import valid_mask
from speechssl.nn.quantize import GroupedKMeansQuantizer, GumbelQuantizer
from speechssl.nn.random import generator_from_global
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream
from speechssl.upstream.wav2vec import LOSSES, CausalConvContext, step_scores

VQ_TYPES = ("gumbel", "kmeans")


@register_upstream("vq_wav2vec")
class VQWav2Vec(Upstream):
    """Hidden states: z, ẑ (quantized) and every context layer, all ``hidden_size`` wide."""

    contract_options = {"hidden_size": 32, "context_layers": 2, "num_codes": 16}  # tests

    def __init__(self, hidden_size: int = 512, kernels: list[int] = CPC_KERNELS,
                 strides: list[int] = CPC_STRIDES, context_layers: int = 9,
                 context_kernel: int = 3, n_predict: int = 8, num_negatives: int = 10,
                 vq_type: str = "gumbel", groups: int = 2, num_codes: int = 320,
                 gamma: float = 0.25, temperature: list[float] = (2.0, 0.5, 0.999995),
                 vq_depth: int = 2, combine_groups: bool = True,
                 log_compression: bool = False, skip: bool = False, dropout: float = 0.0,
                 loss: str = "binary"):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"upstream.loss={loss!r}; valid: {', '.join(LOSSES)}")
        if vq_type not in VQ_TYPES:
            raise ConfigError(f"upstream.vq_type={vq_type!r}; valid: {', '.join(VQ_TYPES)}")
        if hidden_size % groups:
            raise ConfigError(f"upstream.hidden_size={hidden_size} is not divisible by "
                              f"upstream.groups={groups}")
        self.encoder = ConvFeatureEncoder(hidden_size, kernels, strides, norm="group",
                                          activation="relu", log_compression=log_compression)
        self.downsample_rate = self.encoder.stride
        self.vq_type = vq_type
        if vq_type == "gumbel":
            self.quantizer = GumbelQuantizer(hidden_size, num_codes, hidden_size, groups,
                                             tuple(temperature), init_std=1.0 if vq_depth == 1 else None,
                                             proj_depth=vq_depth, shared=combine_groups)
            self.pre_vq = self.pre_vq_norm = None
        else:
            self.quantizer = GroupedKMeansQuantizer(hidden_size, num_codes, groups, gamma)
            # as fairseq's k-means VQ: a grouped 1x1 conv and a per-group norm before it
            self.pre_vq = nn.Conv1d(hidden_size, hidden_size, 1, groups=groups, bias=False)
            self.pre_vq_norm = MaskedGroupNorm(groups, hidden_size)
        self.context = CausalConvContext(hidden_size, context_layers, context_kernel, dropout, skip)
        self.steps = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(n_predict))
        self.num_negatives = num_negatives
        self.loss = loss

    def _quantize(self, wavs: Tensor, lengths: Tensor):
        z, n = self.encoder(wavs, lengths)
        valid = valid_mask(n, z.shape[1])
        zq = z
        if self.pre_vq is not None:
            zq = self.pre_vq_norm(self.pre_vq(z.transpose(1, 2)), valid).transpose(1, 2)
        vq = self.quantizer(zq, valid)
        q = vq["quantized"] * valid.unsqueeze(-1)
        return z, q, n, vq

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        z, q, n, _ = self._quantize(wavs, lengths)
        return UpstreamOutput(hidden_states=[z, q] + self.context(q, n), lengths=n)

    @torch.no_grad()
    def codes(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Code ids (B, T, G) (-1 at padding) and frame lengths (B,); argmax codes in eval."""
        _, _, n, vq = self._quantize(wavs, lengths)
        codes = vq["codes"]
        return codes.masked_fill(~valid_mask(n, codes.shape[1]).unsqueeze(-1), -1), n

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        _, q, n, vq = self._quantize(wavs, lengths)
        c = self.context(q, n)[-1]
        neg_idx = sample_negatives(valid_mask(n, q.shape[1]), self.num_negatives,
                                   generator_from_global())
        loss, acc = step_scores(c, q, n, neg_idx, self.steps, self.loss)
        out = {"contrastive": loss.detach(), "accuracy": acc}
        if self.vq_type == "kmeans":
            loss = loss + vq["loss"]
            out["vq_loss"] = vq["loss"].detach()
        out["code_perplexity"] = vq["code_perplexity"].detach()
        return {"loss": loss, **out}
