"""TERA: Liu et al., 2021, "TERA: Self-Supervised Learning of Transformer Encoder
Representation for Speech".

Mockingjay's reconstruction transformer (speechssl/upstream/mockingjay.py) with channel
(frequency band) and magnitude (Gaussian noise) alterations on top of the time masking.
"""

from __future__ import annotations

from speechssl.upstream.base import register_upstream
from speechssl.upstream.mockingjay import TransformerReconstruction


@register_upstream("tera")
class TERA(TransformerReconstruction):
    """Time + channel + magnitude alterations, each switchable; L1 to the unaltered input on
    the altered elements. Set ``time_mask_ratio``, ``channel_mask_width`` or ``noise_prob``
    to 0 to switch an alteration off."""

    def __init__(self, input_dim: int = 80, downsample: int = 1, hidden_size: int = 256,
                 num_layers: int = 3, num_heads: int = 4, ff_size: int = 1024, dropout: float = 0.1,
                 position: str = "sinusoidal", norm_first: bool = False,
                 time_mask_ratio: float = 0.15, time_mask_span: int = 7, zero_prob: float = 0.8,
                 random_prob: float = 0.1, channel_mask_width: int = 20, noise_prob: float = 0.1,
                 noise_std: float = 0.2, cmvn: str = "utterance"):
        super().__init__(input_dim, downsample, hidden_size, num_layers, num_heads, ff_size,
                         dropout, position, norm_first, time_mask_ratio, time_mask_span, zero_prob,
                         random_prob, channel_mask_width, noise_prob, noise_std, cmvn)
