"""GPT: Radford et al., 2018, "Improving Language Understanding by Generative Pre-Training".

A causal transformer over WordPiece tokens (token + learned position embeddings; pre-LN as
in GPT-2 by default, ``norm_first=false`` for GPT-1's post-LN), trained to predict the next
token; the output layer is tied to the token embeddings. Each token's hidden states see only
the tokens before it, so a sequence's summary is its last token (``downstream.pooling=last``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from speechssl.nn.masking import valid_mask
from speechssl.nn.transformer import SelfAttention, TransformerEncoder
from speechssl.upstream.base import UpstreamOutput, register_upstream
from speechssl.upstream.bert import TextEmbedding, TextUpstream


class CausalSelfAttention(SelfAttention):
    """SelfAttention where token t attends to tokens <= t only (and never to padding);
    tuning prefixes (keys in front of the sequence) stay visible to every token."""

    def allowed(self, T: int, key_padding: Tensor | None, device) -> Tensor:
        allow = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]
        if key_padding is not None:
            allow = allow & (~key_padding)[:, None, None, :]
        return allow  # (B or 1, 1, T, T)


@register_upstream("gpt")
class GPT(TextUpstream):
    """Hidden states: the embedding output and every layer, (B, T, hidden) each."""

    contract_options = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
                        "vocab_size": 100}

    def __init__(self, vocab_size: int = 2000, hidden_size: int = 128, num_layers: int = 4,
                 num_heads: int = 4, ff_size: int = 512, dropout: float = 0.1,
                 max_length: int = 256, norm_first: bool = True, min_frequency: int = 2):
        super().__init__(vocab_size, max_length, min_frequency)
        self.embed = TextEmbedding(vocab_size, hidden_size, max_length, 0, dropout,
                                   norm=not norm_first)
        self.encoder = TransformerEncoder(hidden_size, num_layers, num_heads, ff_size, dropout,
                                          dropout, norm_first=norm_first, position="none")
        for layer in self.encoder.layers:
            causal = CausalSelfAttention(hidden_size, num_heads, dropout)
            causal.load_state_dict(layer.attn.state_dict())
            layer.attn = causal

    def _layers(self, ids: Tensor, lengths: Tensor) -> list[Tensor]:
        h = self.embed(ids)
        return [h] + self.encoder(h, ~valid_mask(lengths, ids.shape[1]))

    def forward(self, ids: Tensor, lengths: Tensor) -> UpstreamOutput:
        """ids: (B, T) long token ids; hidden state t depends on ids[:, :t + 1] only."""
        ids = ids.long()
        return UpstreamOutput(hidden_states=self._layers(ids, lengths), lengths=lengths.long())

    def lm_logits(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, vocab_size): the logits of token t+1 after tokens <= t
        (output layer tied to the token embeddings)."""
        return self._layers(ids.long(), lengths)[-1] @ self.embed.tokens.weight.t()

    def pretrain_loss(self, ids: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Cross-entropy of token t+1 given tokens <= t, over real tokens."""
        ids = ids.long()
        logits = self.lm_logits(ids, lengths)[:, :-1]
        target = ids[:, 1:].masked_fill(~valid_mask(lengths - 1, ids.shape[1] - 1), -100)
        loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100)
        known = target != -100
        acc = (logits.argmax(-1)[known] == target[known]).float().mean()
        return {"loss": loss, "next_token_accuracy": acc.detach(),
                "perplexity": loss.detach().exp()}
