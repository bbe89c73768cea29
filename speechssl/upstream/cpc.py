"""CPC: van den Oord, Li and Vinyals, 2018, "Representation Learning with Contrastive
Predictive Coding", as modified by Riviere et al., 2020, "Unsupervised Pretraining Transfers
Well Across Languages" (the "modified CPC" of SUPERB / s3prl).

A strided conv encoder on the waveform (kernels 10,8,4,4,4, strides 5,4,2,2,2: 160 samples
= 10 ms per frame) gives z_t; a recurrent context network gives c_t; one linear map W_k per
step predicts z_{t+k} from c_t, k = 1..K, scored by InfoNCE against distractors z drawn
from the same sequence or the whole batch. Differences from the 2018 paper, as in the
modified CPC: channel-wise normalisation in the encoder (not batch norm), an LSTM context
network (GRU selectable), 256 units. Not reproduced: the modified CPC's 1-layer
transformer prediction head (linear W_k here, as in the 2018 paper). The distractors are
drawn once per target frame and shared across the K steps (as in the CPC_audio code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.contrastive import contrastive_logits, gather_frames, info_nce, sample_negatives
from speechssl.nn.conv_encoder import (
    CPC_KERNELS,
    CPC_STRIDES,
    ConvFeatureEncoder,
    unpadded,
)
from speechssl.nn.masking import valid_mask
from speechssl.nn.random import generator_from_global
from speechssl.nn.rnn import LSTM
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


def future_pairs(lengths: Tensor, T: int, k: int) -> Tensor:
    """(B, T - k) bool: context frames t whose target t + k is a valid frame."""
    return valid_mask(lengths - k, max(T - k, 0))


@register_upstream("cpc")
class CPC(Upstream):
    """Hidden states: the encoder output z and each context layer's output, all
    ``hidden_size`` wide, 10 ms per frame (or the product of ``strides``)."""

    contract_options = {"hidden_size": 32, "num_negatives": 8}  # small, for tests

    def __init__(self, hidden_size: int = 256, kernels: list[int] = CPC_KERNELS,
                 strides: list[int] = CPC_STRIDES, norm: str = "channel", context: str = "lstm",
                 num_layers: int = 1, n_predict: int = 12, num_negatives: int = 128,
                 cross_batch: bool = True, dropout: float = 0.0):
        super().__init__()
        if context not in ("lstm", "gru"):
            raise ConfigError(f"upstream.context={context!r}; valid: lstm, gru")
        if n_predict < 1 or num_negatives < 1 or num_layers < 1:
            raise ConfigError("upstream.n_predict, num_negatives and num_layers must be >= 1")
        self.encoder = ConvFeatureEncoder(hidden_size, kernels, strides, norm=norm,
                                          activation="relu")
        self.downsample_rate = self.encoder.stride
        rnn = LSTM if context == "lstm" else nn.GRU
        self.context = nn.ModuleList(rnn(hidden_size, hidden_size, batch_first=True)
                                     for _ in range(num_layers))
        self.predictors = nn.ModuleList(nn.Linear(hidden_size, hidden_size, bias=False)
                                        for _ in range(n_predict))
        self.drop = nn.Dropout(dropout)
        self.num_negatives, self.cross_batch = num_negatives, cross_batch

    def _layers(self, wavs: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """(B, S) -> [z (B, T, H), context layer outputs (B, T, H)...], frames (B,)."""
        z, n = self.encoder(wavs, lengths)
        keep = None if unpadded(n, z.shape[1]) else valid_mask(n, z.shape[1]).unsqueeze(-1)
        outs, x = [z], z
        for rnn in self.context:  # causal, so padding at the end never reaches valid frames
            x = self.drop(rnn(x)[0])
            if keep is not None:
                x = x * keep
            outs.append(x)
        return outs, n

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        outs, n = self._layers(wavs, lengths)
        return UpstreamOutput(hidden_states=outs, lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        outs, n = self._layers(wavs, lengths)
        z, c = outs[0], outs[-1]
        B, T, H = z.shape
        neg_idx = sample_negatives(valid_mask(n, T), self.num_negatives, generator_from_global(),
                                   cross_batch=self.cross_batch)  # (B, T, N)
        negs = gather_frames(z, neg_idx)  # (B, T, N, H)
        losses, accs = [], []
        for k, w in enumerate(self.predictors, start=1):
            if T <= k:
                break
            valid = future_pairs(n, T, k)  # (B, T - k)
            pred = w(c[:, :T - k])[valid]
            logits = contrastive_logits(pred, z[:, k:][valid], negs[:, k:][valid])
            loss, acc = info_nce(logits)
            losses.append(loss)
            accs.append(acc)
        if not losses:
            raise ConfigError(f"cpc: sequences of {T} frames are too short to predict 1 step")
        loss = torch.stack(losses).mean()
        return {"loss": loss, "accuracy": torch.stack(accs).mean(),
                "accuracy_k1": accs[0], "accuracy_klast": accs[-1]}
