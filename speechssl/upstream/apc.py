"""APC: Chung et al., 2019, "An Unsupervised Autoregressive Model for Speech Representation Learning"."""

from __future__ import annotations

from torch import Tensor, nn

from speechssl.nn.frontend import HOP_SAMPLES, LogMel
from speechssl.nn.masking import valid_mask
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


def apc_l1_loss(predicted: Tensor, target: Tensor, lengths: Tensor, n_future: int) -> Tensor:
    """L1 between the prediction at frame t and the input frame t + n.

    predicted, target: (B, T, D); lengths: (B,). Only pairs where t + n is a real
    frame count; the loss is the mean absolute error per element over those pairs.
    """
    B, T, D = target.shape
    if T <= n_future:
        raise ValueError(f"sequences of {T} frames are too short to predict {n_future} ahead")
    pred = predicted[:, : T - n_future]
    tgt = target[:, n_future:]
    valid = valid_mask(lengths - n_future, T - n_future).unsqueeze(-1)
    denom = valid.sum().clamp(min=1) * D
    return ((pred - tgt).abs() * valid).sum() / denom


@register_upstream("apc")
class APC(Upstream):
    """Unidirectional GRU stack over 80-d log-mel frames, trained to predict the frame
    ``n_future`` steps ahead with an L1 loss. Residual connections join consecutive
    layers of equal size, as in the paper. Every GRU layer is a hidden state.
    """

    downsample_rate = HOP_SAMPLES

    def __init__(self, input_dim: int = 80, hidden_size: int = 512, num_layers: int = 3,
                 dropout: float = 0.1, residual: bool = True, n_future: int = 3,
                 cmvn: str = "utterance"):
        super().__init__()
        self.frontend = LogMel(input_dim, cmvn)
        self.n_future = n_future
        self.residual = residual
        sizes = [input_dim] + [hidden_size] * num_layers
        self.rnns = nn.ModuleList(
            nn.GRU(sizes[i], sizes[i + 1], batch_first=True) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.postnet = nn.Linear(hidden_size, input_dim)

    def _layers(self, feats: Tensor, lengths: Tensor) -> list[Tensor]:
        """Causal, so right padding never reaches a valid frame: no packing needed."""
        x, outs = feats, []
        for i, rnn in enumerate(self.rnns):
            y, _ = rnn(x)
            if i < len(self.rnns) - 1:
                y = self.dropout(y)
            if self.residual and i > 0:
                y = y + x
            y = self._after_layer(i, y, lengths)
            outs.append(y)
            x = y
        return outs

    def _after_layer(self, i: int, y: Tensor, lengths: Tensor) -> Tensor:
        """Hook on layer ``i``'s (B, T, H) output before the next layer (VQ-APC quantizes)."""
        return y

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        feats, feat_lengths = self.frontend(wavs, lengths)
        return UpstreamOutput(hidden_states=self._layers(feats, feat_lengths), lengths=feat_lengths)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        feats, feat_lengths = self.frontend(wavs, lengths)
        hidden = self._layers(feats, feat_lengths)[-1]
        loss = apc_l1_loss(self.postnet(hidden), feats, feat_lengths, self.n_future)
        return {"loss": loss}
