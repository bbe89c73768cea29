"""VQ-APC: Chung, Tang and Glass, 2020, "Vector-Quantized Autoregressive Predictive Coding".

APC (speechssl/upstream/apc.py) with a Gumbel-softmax vector-quantization layer after one GRU
layer: the layers above (and the predictor) only see the quantized sequence, which limits
the information the model can carry forward. Code usage (perplexity) is logged.
"""

from __future__ import annotations

from torch import Tensor, nn

from speechssl.nn.masking import valid_mask
from speechssl.nn.quantize import GumbelQuantizer
from speechssl.upstream.apc import APC, apc_l1_loss
from speechssl.upstream.base import UpstreamOutput, register_upstream


@register_upstream("vq_apc")
class VQAPC(APC):
    """GRU stack as in APC; after GRU layer ``vq_layer`` (0-based, -1 = last) its output is
    replaced by a Gumbel VQ of it (``codebook_size`` codes per group, ``groups`` groups,
    temperature (start, end, decay per step)). Hidden states: every GRU layer, with the
    quantized layer's output in its place."""

    def __init__(self, input_dim: int = 80, hidden_size: int = 512, num_layers: int = 3,
                 dropout: float = 0.1, residual: bool = True, n_future: int = 3,
                 vq_layer: int = -1, codebook_size: int = 512, groups: int = 1,
                 temperature: tuple[float, float, float] | list[float] = (1.0, 0.5, 0.9999),
                 cmvn: str = "utterance"):
        super().__init__(input_dim, hidden_size, num_layers, dropout, residual, n_future, cmvn)
        self.vq_layer = vq_layer % num_layers
        self.vq = GumbelQuantizer(hidden_size, codebook_size, hidden_size, groups, tuple(temperature))
        self.vq_proj = nn.Linear(hidden_size, hidden_size)
        self._vq: dict[str, Tensor] = {}  # the quantizer's output of the last pass

    def _after_layer(self, i: int, y: Tensor, lengths: Tensor) -> Tensor:
        if i != self.vq_layer:
            return y
        self._vq = self.vq(y, valid_mask(lengths, y.shape[1]))
        return self.vq_proj(self._vq["quantized"])

    def _run(self, feats: Tensor, lengths: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """(B, T, input_dim) -> GRU layer outputs (B, T, H) each, and the quantizer's output."""
        outs = self._layers(feats, lengths)
        vq, self._vq = self._vq, {}
        return outs, vq

    def codes(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Discrete code ids (B, T, groups) and frame lengths (B,)."""
        feats, n = self.frontend(wavs, lengths)
        return self._run(feats, n)[1]["codes"], n

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        feats, n = self.frontend(wavs, lengths)
        return UpstreamOutput(hidden_states=self._layers(feats, n), lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        feats, n = self.frontend(wavs, lengths)
        outs, vq = self._run(feats, n)
        loss = apc_l1_loss(self.postnet(outs[-1]), feats, n, self.n_future)
        return {"loss": loss, "code_perplexity": vq["code_perplexity"].detach(),
                "prob_perplexity": vq["prob_perplexity"].detach(),
                "temperature": loss.new_tensor(self.vq.temperature)}
