"""VQ-VAE: van den Oord, Vinyals and Kavukcuoglu, 2017, "Neural Discrete Representation Learning".

A 1-D convolutional encoder over log-mel frames, a nearest-neighbour codebook (straight-
through gradients, commitment loss beta = 0.25, optional EMA updates and dead-code
restarts), and a convolutional decoder reconstructing the log-mel input (MSE). The paper's
speech model works on raw audio with 64x downsampling and a WaveNet decoder; here the input
is log-mel and ``strides`` set the frame rate (160 * prod(strides) samples per frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.nn.frontend import HOP_SAMPLES, LogMel
from speechssl.nn.masking import valid_mask
from speechssl.nn.quantize import VectorQuantizer
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


def conv_lengths(lengths: Tensor, kernel: int, stride: int) -> Tensor:
    """Valid output frames of a conv with padding kernel // 2: ceil(n / stride) for odd kernels."""
    pad = kernel // 2
    return torch.div(lengths + 2 * pad - kernel, stride, rounding_mode="floor") + 1


@register_upstream("vqvae")
class VQVAE(Upstream):
    """Encoder: ``len(strides)`` conv layers (kernel ``kernel_size``, ReLU, residual where the
    shape allows) then a 1x1 conv to the code space. Hidden states: the encoder conv outputs
    at the final frame rate (those after the last stride > 1) and the quantized sequence,
    all ``hidden_size`` wide. ``codes`` gives the code ids."""

    def __init__(self, input_dim: int = 80, hidden_size: int = 256, strides: list[int] = (1, 1, 1),
                 kernel_size: int = 3, codebook_size: int = 512, beta: float = 0.25,
                 ema: bool = True, ema_decay: float = 0.99, restart_threshold: float = 0.01,
                 cmvn: str = "utterance"):
        super().__init__()
        self.frontend = LogMel(input_dim, cmvn)
        self.strides, self.kernel_size = [int(s) for s in strides], kernel_size
        self.downsample_rate = HOP_SAMPLES * math.prod(self.strides)
        sizes = [input_dim] + [hidden_size] * len(self.strides)
        pad = kernel_size // 2
        self.encoder = nn.ModuleList(
            nn.Conv1d(sizes[i], hidden_size, kernel_size, stride=s, padding=pad)
            for i, s in enumerate(self.strides))
        self.to_code = nn.Conv1d(hidden_size, hidden_size, 1)
        self.quantizer = VectorQuantizer(codebook_size, hidden_size, beta, ema, ema_decay,
                                         restart_threshold=restart_threshold)
        self.decoder = nn.ModuleList(
            nn.Conv1d(hidden_size, hidden_size, kernel_size, padding=pad) for _ in self.strides)
        self.out = nn.Conv1d(hidden_size, input_dim, 1)

    def _encode(self, feats: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """(B, T, input_dim) -> encoder outputs [(B, T', H)], pre-quantization z (B, T', H),
        frame lengths (B,). Padded frames are zeroed after every layer."""
        n = lengths
        x = feats.transpose(1, 2) * valid_mask(n, feats.shape[1]).unsqueeze(1)
        outs = []
        for conv, s in zip(self.encoder, self.strides, strict=True):
            y = torch.relu(conv(x))
            n = conv_lengths(n, self.kernel_size, s)
            if y.shape == x.shape:
                y = y + x
            x = y * valid_mask(n, y.shape[-1]).unsqueeze(1)
            outs.append(x.transpose(1, 2))
        z = self.to_code(x).transpose(1, 2)
        return outs, z, n

    def _decode(self, q: Tensor, frames: int) -> Tensor:
        """(B, T', H) -> (B, frames, input_dim): upsample by each stride, conv, ReLU."""
        x = q.transpose(1, 2)
        for conv, s in zip(self.decoder, reversed(self.strides), strict=True):
            x = torch.relu(conv(x.repeat_interleave(s, dim=-1))) + x.repeat_interleave(s, dim=-1)
        x = self.out(x)
        if x.shape[-1] < frames:
            x = F.pad(x, (0, frames - x.shape[-1]))
        return x[..., :frames].transpose(1, 2)

    def _quantize(self, wavs: Tensor, lengths: Tensor):
        feats, n = self.frontend(wavs, lengths)
        outs, z, m = self._encode(feats, n)
        vq = self.quantizer(z, valid_mask(m, z.shape[1]))
        return feats, n, outs, m, vq

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        _, _, outs, m, vq = self._quantize(wavs, lengths)
        q = vq["quantized"] * valid_mask(m, vq["quantized"].shape[1]).unsqueeze(-1)
        outs = [h for h in outs if h.shape[1] == q.shape[1]]
        return UpstreamOutput(hidden_states=outs + [q], lengths=m)

    @torch.no_grad()
    def codes(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Code ids (B, T') (-1 at padding) and frame lengths (B,)."""
        _, _, _, m, vq = self._quantize(wavs, lengths)
        return vq["codes"].masked_fill(~valid_mask(m, vq["codes"].shape[1]), -1), m

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        feats, n, _, m, vq = self._quantize(wavs, lengths)
        q = vq["quantized"] * valid_mask(m, vq["quantized"].shape[1]).unsqueeze(-1)
        recon = self._decode(q, feats.shape[1])
        valid = valid_mask(n, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
        mse = ((recon - feats).pow(2) * valid).sum() / (valid.sum() * feats.shape[-1]).clamp(min=1)
        return {"loss": mse + vq["loss"], "reconstruction": mse.detach(),
                "commitment": vq["commitment"].detach(), "perplexity": vq["perplexity"].detach()}
