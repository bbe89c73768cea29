"""A plain transformer encoder: Vaswani et al., 2017, "Attention Is All You Need"
(post-LN, as in BERT and Mockingjay/TERA; pre-LN as in Xiong et al., 2020, optional).

Right-padded batches with a key padding mask, so valid frames never attend to padding;
every layer's output is returned.

Hooks for the tuning modes (speechssl/tuning.py installs speechssl/nn/peft.py layers; all
None by default, so a plain encoder and its checkpoints are unchanged): a LoRA update on
``SelfAttention.qkv`` / ``out``, a bottleneck adapter after each layer's feed-forward,
per-layer attention prefixes (keys and values attended by every frame, never masked) and
soft prompt vectors prepended to the encoder input and stripped from every output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITIONS = ("sinusoidal", "learned", "none", "conv")


def sinusoidal_positions(T: int, dim: int, device=None) -> Tensor:
    """(T, dim) sin/cos position table of Vaswani et al."""
    pos = torch.arange(T, device=device, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                    * (-math.log(10000.0) / dim))
    table = torch.zeros(T, dim, device=device)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return table


class ConvPositions(nn.Module):
    """Convolutional relative position embedding of Baevski et al., 2020, "wav2vec 2.0":
    a grouped, weight-normalised conv over time (kernel ``kernel``, ``groups`` groups, "same"
    length) followed by GELU. (B, T, D) -> (B, T, D), to be added to the input."""

    def __init__(self, dim: int, kernel: int = 128, groups: int = 16):
        super().__init__()
        if dim % groups:
            raise ValueError(f"hidden size {dim} is not divisible by {groups} conv groups")
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        std = math.sqrt(4.0 / (kernel * dim))
        nn.init.normal_(conv.weight, mean=0.0, std=std)
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., :-self.trim]
        return F.gelu(y).transpose(1, 2)


class ConvPositionStack(nn.Module):
    """The convolutional positions of data2vec (Baevski et al., 2022): ``depth`` grouped
    convs over time (kernel ``kernel``, "same" length, no weight norm), each followed by a
    layer norm without affine parameters and GELU (paper: 5 convs of kernel 19, 16 groups;
    HuggingFace's Data2VecAudioPositionalConvEmbedding). (B, T, D) -> (B, T, D), to be added
    to the input; padded frames (``key_padding`` True) are zeroed before every conv, so
    padding never changes the valid frames."""

    def __init__(self, dim: int, kernel: int = 19, groups: int = 16, depth: int = 5):
        super().__init__()
        if dim % groups:
            raise ValueError(f"hidden size {dim} is not divisible by {groups} conv groups")
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
                                   for _ in range(depth))
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        keep = None if key_padding is None else (~key_padding).unsqueeze(-1).to(x.dtype)
        for conv in self.convs:
            if keep is not None:
                x = x * keep
            y = conv(x.transpose(1, 2))
            if self.trim:
                y = y[..., :-self.trim]
            x = F.gelu(F.layer_norm(y.transpose(1, 2), y.shape[1:2]))
        return x


class SelfAttention(nn.Module):
    """Multi-head self-attention; (B, T, D) and key padding (B, T) True=pad -> (B, T, D).

    ``prefix``: (2, P, D) keys and values prepended to the projected keys and values; every
    frame may attend to them. Subclasses change who attends to whom through ``allowed``
    (gpt.py's CausalSelfAttention). ``lora_qkv`` / ``lora_out``: modules adding a low-rank
    update to the two projections."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.lora_qkv: nn.Module | None = None
        self.lora_out: nn.Module | None = None

    def allowed(self, T: int, key_padding: Tensor | None, device) -> Tensor | None:
        """Which keys each query may attend to: bool, broadcastable to (B, 1, T, T), or
        None for all. Here: every key that is not padding."""
        return None if key_padding is None else (~key_padding)[:, None, None, :]  # (B,1,1,T)

    def forward(self, x: Tensor, key_padding: Tensor | None,
                prefix: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x)
        if self.lora_qkv is not None:
            qkv = qkv + self.lora_qkv(x)
        q, k, v = qkv.view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        allow = self.allowed(T, key_padding, x.device)
        if prefix is not None:  # (2, P, D) -> (B, H, P, D/H) each, in front of k and v
            P = prefix.shape[1]
            pk, pv = prefix.to(x.dtype).view(2, 1, P, self.heads, D // self.heads).permute(
                0, 1, 3, 2, 4).expand(2, B, self.heads, P, D // self.heads)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            if allow is not None:
                allow = torch.cat([allow.new_ones(*allow.shape[:-1], P), allow], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allow,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)
        out = self.out(y)
        if self.lora_out is not None:
            out = out + self.lora_out(y)
        return out


class TransformerLayer(nn.Module):
    """Attention + feed-forward, each with residual, dropout and layer norm (pre or post)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.1, norm_first: bool = False,
                 activation: str = "gelu"):
        super().__init__()
        self.attn = SelfAttention(dim, heads, attention_dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU() if activation == "gelu"
                                else nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.adapter: nn.Module | None = None  # applied to the feed-forward output

    def feed_forward(self, x: Tensor) -> Tensor:
        h = self.ff(x)
        return h if self.adapter is None else self.adapter(h)

    def forward(self, x: Tensor, key_padding: Tensor | None,
                prefix: Tensor | None = None, ffn_out: list | None = None) -> Tensor:
        """``ffn_out``: a list to which the feed-forward output before its residual sum is
        appended (data2vec's targets)."""
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), key_padding, prefix))
            ff = self.drop(self.feed_forward(self.norm2(x)))
        else:
            x = self.norm1(x + self.drop(self.attn(x, key_padding, prefix)))
            ff = self.drop(self.feed_forward(x))
        if ffn_out is not None:
            ffn_out.append(ff)
        return x + ff if self.norm_first else self.norm2(x + ff)


class TransformerEncoder(nn.Module):
    """(B, T, D) inputs (already embedded) -> one (B, T, D) output per layer.

    position: "sinusoidal", "learned" (``max_len`` positions), "conv" (wav2vec 2.0's
    convolutional relative positions, ``conv_pos_kernel`` / ``conv_pos_groups``; with
    ``conv_pos_layers`` N >= 1, data2vec's stack of N convs instead) or "none" (the caller
    adds its own). Pre-LN adds a final layer norm to the last output. ``share_layers``:
    ALBERT's cross-layer sharing (Lan et al., 2020): one layer's weights applied
    ``num_layers`` times (``layers`` holds the same module at every depth).
    """

    def __init__(self, dim: int, num_layers: int, heads: int, ff_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.1, norm_first: bool = False,
                 position: str = "sinusoidal", max_len: int = 4096, activation: str = "gelu",
                 conv_pos_kernel: int = 128, conv_pos_groups: int = 16, conv_pos_layers: int = 0,
                 share_layers: bool = False):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; valid: {', '.join(POSITIONS)}")
        self.position, self.norm_first = position, norm_first
        self.pos_embed = nn.Embedding(max_len, dim) if position == "learned" else None
        if position == "conv":
            self.pos_conv = ConvPositions(dim, conv_pos_kernel, conv_pos_groups) \
                if conv_pos_layers == 0 else \
                ConvPositionStack(dim, conv_pos_kernel, conv_pos_groups, conv_pos_layers)
        make = lambda: TransformerLayer(dim, heads, ff_dim, dropout, attention_dropout,  # noqa: E731
                                        norm_first, activation)
        self.layers = nn.ModuleList([make()] * num_layers if share_layers
                                    else [make() for _ in range(num_layers)])
        self.final_norm = nn.LayerNorm(dim) if norm_first else None
        self.prefix: nn.Module | None = None  # () -> (num_layers, 2, P, dim) keys and values
        self.register_parameter("prompt", None)  # (P, dim) vectors in front of the input

    def add_positions(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        """x: (B, T, D) -> x plus positions; key_padding (B, T) True at padding, which the
        convolutional positions read as zeros."""
        T = x.shape[1]
        if self.position == "conv":
            if key_padding is not None:
                x = x.masked_fill(key_padding.unsqueeze(-1), 0.0)
            return x + self.pos_conv(x, key_padding)
        if self.position == "sinusoidal":
            return x + sinusoidal_positions(T, x.shape[-1], x.device).to(x.dtype)
        if self.position == "learned":
            return x + self.pos_embed(torch.arange(T, device=x.device))
        return x

    def forward(self, x: Tensor, key_padding: Tensor | None = None,
                ffn_out: list | None = None) -> list[Tensor]:
        """x: (B, T, D); key_padding: (B, T) bool, True at padding. Returns num_layers
        outputs, (B, T, D) each (a soft prompt's positions are stripped from them);
        ``ffn_out``, a list, receives each layer's feed-forward output before its residual
        sum, stripped the same way."""
        B, _, D = x.shape
        P = 0 if self.prompt is None else self.prompt.shape[0]
        if P:
            x = torch.cat([self.prompt.to(x.dtype).expand(B, P, D), x], dim=1)
            if key_padding is not None:
                key_padding = torch.cat([key_padding.new_zeros(B, P), key_padding], dim=1)
        prefixes = [None] * len(self.layers) if self.prefix is None else self.prefix()
        outs, ffs = [], [] if ffn_out is not None else None
        for layer, prefix in zip(self.layers, prefixes, strict=True):
            x = layer(x, key_padding, prefix, ffs)
            outs.append(x[:, P:])
        if ffn_out is not None:
            ffn_out.extend(f[:, P:] for f in ffs)
        if self.final_norm is not None:
            outs[-1] = self.final_norm(outs[-1])
        return outs


def distinct_layers(encoder: TransformerEncoder) -> list[TransformerLayer]:
    """The encoder's layers, each module once (one when ALBERT-shared)."""
    seen: dict[int, TransformerLayer] = {}
    for layer in encoder.layers:
        seen.setdefault(id(layer), layer)
    return list(seen.values())
