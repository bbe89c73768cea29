"""wav2vec: Schneider, Baevski, Collobert and Auli, 2019, "wav2vec: Unsupervised
Pre-training for Speech Recognition".

Encoder: 5 conv layers on the waveform (kernels 10,8,4,4,4, strides 5,4,2,2,2: 10 ms
frames), group norm, ReLU, giving z. Context: 9 causal conv layers (kernel 3, stride 1) giving
c. For each step k = 1..K (K = 12) an affine step h_k(c_i) scores the true future z_{i+k}
against ``num_negatives`` (10) distractors drawn uniformly from the same sequence, with the
binary loss -log s(z_{i+k}.h_k(c_i)) - sum log s(-z~.h_k(c_i)), summed over k
(``loss="infonce"``: the softmax cross-entropy over the 1 + K candidates, fairseq's --infonce).
wav2vec large's log compression and scaled skip connections are options.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.contrastive import (
    binary_contrastive,
    gather_frames,
    info_nce,
    sample_negatives,
)
from speechssl.nn.conv_encoder import (
    CPC_KERNELS,
    CPC_STRIDES,
    ConvFeatureEncoder,
    MaskedGroupNorm,
    unpadded,
)
from speechssl.nn.masking import valid_mask
from speechssl.nn.random import generator_from_global
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream
from speechssl.upstream.cpc import future_pairs


class CausalConvContext(nn.Module):
    """``num_layers`` causal conv layers (left padding kernel - 1), dropout, group norm over the
    valid frames (so padding changes nothing; it does pool over the whole utterance), ReLU;
    with ``skip``, each layer's output is (y + x) * sqrt(residual_scale).
    (B, T, C) -> one (B, T, C) output per layer."""

    def __init__(self, channels: int, num_layers: int = 9, kernel: int = 3, dropout: float = 0.0,
                 skip: bool = False, residual_scale: float = 0.5):
        super().__init__()
        self.kernel, self.skip = kernel, skip
        self.scale = math.sqrt(residual_scale)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel)
                                   for _ in range(num_layers))
        self.norms = nn.ModuleList(MaskedGroupNorm(1, channels) for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        """x: (B, T, C), zero at padded frames; so are the outputs (the masked group norm
        zeroes them, and ReLU keeps the zeros)."""
        valid = None if unpadded(lengths, x.shape[1]) else valid_mask(lengths, x.shape[1])
        h, outs = x.transpose(1, 2), []
        for conv, norm in zip(self.convs, self.norms, strict=True):
            y = self.drop(conv(nn.functional.pad(h, (self.kernel - 1, 0))))
            y = torch.relu(norm(y, valid))
            h = (y + h) * self.scale if self.skip else y
            outs.append(h.transpose(1, 2))
        return outs


LOSSES = ("binary", "infonce")


def step_scores(c: Tensor, z: Tensor, lengths: Tensor, neg_idx: Tensor, steps: nn.ModuleList,
                loss: str = "binary") -> tuple[Tensor, Tensor]:
    """The contrastive loss summed over steps, and the mean accuracy.

    c: (B, T, C) context, z: (B, T, C) targets, neg_idx: (B, T, K) distractor indices
    (flat B * T) for each target frame; steps[k - 1] maps c_i to the prediction of z_{i+k}.
    loss: "binary" (wav2vec's) or "infonce" (cross-entropy of the positive among the
    1 + K dot products: fairseq's ``--infonce``)."""
    T = z.shape[1]
    negs = gather_frames(z, neg_idx)  # (B, T, K, C)
    total, accs = z.new_zeros(()), []
    for k, step in enumerate(steps, start=1):
        if T <= k:
            break
        valid = future_pairs(lengths, T, k)
        pred = step(c[:, :T - k])[valid]  # (N, C)
        pos = (pred * z[:, k:][valid]).sum(-1)
        neg = (pred.unsqueeze(1) * negs[:, k:][valid]).sum(-1)
        if loss == "infonce":
            step_loss, acc = info_nce(torch.cat([pos.unsqueeze(1), neg], 1))
        else:
            step_loss, acc = binary_contrastive(pos, neg)
        total = total + step_loss
        accs.append(acc)
    if not accs:
        raise ConfigError(f"sequences of {T} frames are too short to predict 1 step")
    return total, torch.stack(accs).mean()


@register_upstream("wav2vec")
class Wav2Vec(Upstream):
    """Hidden states: z and every context layer, all ``hidden_size`` wide."""

    contract_options = {"hidden_size": 32, "context_layers": 2}  # small, for tests

    def __init__(self, hidden_size: int = 512, kernels: list[int] = CPC_KERNELS,
                 strides: list[int] = CPC_STRIDES, context_layers: int = 9,
                 context_kernel: int = 3, n_predict: int = 12, num_negatives: int = 10,
                 log_compression: bool = False, skip: bool = False, dropout: float = 0.0,
                 loss: str = "binary"):
        super().__init__()
        if n_predict < 1 or num_negatives < 1 or context_layers < 1:
            raise ConfigError("upstream.n_predict, num_negatives and context_layers must be >= 1")
        if loss not in LOSSES:
            raise ConfigError(f"upstream.loss={loss!r}; valid: {', '.join(LOSSES)}")
        self.loss = loss
        self.encoder = ConvFeatureEncoder(hidden_size, kernels, strides, norm="group",
                                          activation="relu", log_compression=log_compression)
        self.downsample_rate = self.encoder.stride
        self.context = CausalConvContext(hidden_size, context_layers, context_kernel, dropout, skip)
        self.steps = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(n_predict))
        self.num_negatives = num_negatives

    def _layers(self, wavs: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        z, n = self.encoder(wavs, lengths)
        return [z] + self.context(z, n), n

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        outs, n = self._layers(wavs, lengths)
        return UpstreamOutput(hidden_states=outs, lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        outs, n = self._layers(wavs, lengths)
        z = outs[0]
        neg_idx = sample_negatives(valid_mask(n, z.shape[1]), self.num_negatives,
                                   generator_from_global())
        loss, acc = step_scores(outs[-1], z, n, neg_idx, self.steps, self.loss)
        return {"loss": loss, "accuracy": acc}
