"""Discrete BERT: Baevski, Auli and Mohamed, 2019/2020, "Effectiveness of self-supervised
pre-training for speech recognition" (the second stage of vq-wav2vec, Baevski et al., 2020).

A frozen vq-wav2vec (``upstream.units=<checkpoint>``; any upstream with ``codes()`` works:
vq_wav2vec, hubert, vqvae) turns audio into one unit per frame, the tuple of its group codes
being one token (the paper: G = 2 groups of V = 320, the combinations seen in training as the
vocabulary). A BERT (token + sinusoidal positions, post-LN transformer) is pre-trained on the
token sequences with masked prediction: spans of 10 tokens starting at 5 % of the positions
(wav2vec 2.0's time masking) become [MASK], and the masked tokens are predicted through the
output layer tied to the token embeddings. Its layers are the audio upstream's hidden states,
at the unit model's frame rate.

Vocabulary: ``vocab_size=0`` uses every code combination (V ** G tokens, fine for small
codebooks); N > 0 keeps the N - 3 most frequent combinations of the pre-training split
(counted in ``prepare``; the rest become [UNK]), kept as a buffer with the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.masking import valid_mask, wav2vec2_mask
from speechssl.nn.random import generator_from_global
from speechssl.nn.transformer import TransformerEncoder
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream

PAD, UNK, MASK = 0, 1, 2  # the special tokens; units start at 3


@register_upstream("discrete_bert")
class DiscreteBERT(Upstream):
    """Hidden states: the token embedding and every transformer layer (``hidden_size``)."""

    checkpoint_options = ("units",)
    tuning_modes = TRANSFORMER_TUNING

    contract_options = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
                        "unit_space": 256}  # tests (+ a unit model)

    def __init__(self, units: str | None = None, unit_space: int = 102400, vocab_size: int = 0,
                 hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 ff_size: int = 3072, dropout: float = 0.1, mask_prob: float = 0.05,
                 mask_span: int = 10, downsample_rate: int = 160):
        super().__init__()
        if vocab_size < 0 or unit_space < 1:
            raise ConfigError(f"upstream.vocab_size={vocab_size} must be >= 0 and "
                              f"upstream.unit_space={unit_space} >= 1")
        tokens = (unit_space if vocab_size == 0 else vocab_size - 3) + 3
        self.units_path, self.downsample_rate = units, downsample_rate
        self.mask_prob, self.mask_span = mask_prob, mask_span
        # unit (flat code combination) -> token id; all known when vocab_size = 0
        table = torch.arange(3, unit_space + 3) if vocab_size == 0 else \
            torch.full((unit_space,), UNK)
        self.register_buffer("unit_to_token", table)
        self.register_buffer("has_vocab", torch.tensor(vocab_size == 0))
        self.vocab_size = tokens
        self.embed = nn.Embedding(tokens, hidden_size, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.norm = nn.LayerNorm(hidden_size)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(hidden_size, num_layers, num_heads, ff_size, dropout,
                                          dropout, norm_first=False, position="sinusoidal")
        self.out_bias = nn.Parameter(torch.zeros(tokens))
        self._units: list[Upstream] = []  # the frozen unit model (not saved with the weights)

    # ---- units ---------------------------------------------------------------------------
    def unit_model(self) -> Upstream:
        if not self._units:
            from speechssl.upstream.load import frozen_from_checkpoint

            if not self.units_path:
                raise ConfigError("discrete_bert needs upstream.units=<a vq_wav2vec (or hubert, "
                                  "vqvae) checkpoint> whose codes() are the tokens")
            model = frozen_from_checkpoint(self.units_path, "units", self.embed.weight.device)
            if not hasattr(model, "codes"):
                raise ConfigError(f"upstream.units={self.units_path!r}: "
                                  f"{type(model).__name__} has no discrete codes()")
            if model.downsample_rate != self.downsample_rate:
                raise ConfigError(f"upstream.downsample_rate={self.downsample_rate}: the unit "
                                  f"model has {model.downsample_rate} samples per frame")
            self._units.append(model)
        return self._units[0]

    @torch.no_grad()
    def flat_units(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) -> flat unit ids (B, T) (group codes c_g as sum c_g V^g; -1 at padding)
        and frames (B,)."""
        codes, n = self.unit_model().codes(wavs, lengths)
        if codes.dim() == 2:
            codes = codes.unsqueeze(-1)
        G = codes.shape[-1]
        V = round(self.unit_to_token.numel() ** (1 / G))
        if V ** G != self.unit_to_token.numel():
            raise ConfigError(f"upstream.unit_space={self.unit_to_token.numel()} is not "
                              f"(codes per group) ** {G} for this unit model")
        flat = (codes.clamp(min=0) * (V ** torch.arange(G, device=codes.device))).sum(-1)
        return flat.masked_fill(codes[..., 0] < 0, -1), n

    def tokens(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) -> token ids (B, T) (PAD at padding) and frames (B,)."""
        if not bool(self.has_vocab):
            raise ConfigError("discrete_bert has no unit vocabulary yet: pre-train it (its "
                              "prepare counts the units) or load its checkpoint")
        flat, n = self.flat_units(wavs, lengths)
        ids = self.unit_to_token[flat.clamp(min=0)]
        return ids.masked_fill(flat < 0, PAD), n

    @torch.no_grad()
    def prepare(self, corpus, run_dir, device) -> None:
        """With ``vocab_size`` > 0 and no vocabulary yet: count the units of the pre-training
        split and keep the most frequent."""
        if bool(self.has_vocab):
            return
        from speechssl.data.audio import load_audio

        counts = torch.zeros(self.unit_to_token.numel(), dtype=torch.long)
        for it in corpus.items("pretrain", "train"):
            wav = load_audio(it["path"], self.sample_rate).to(self.embed.weight.device)
            flat, _ = self.flat_units(wav[None], torch.tensor([wav.numel()], device=wav.device))
            flat = flat[flat >= 0].cpu()
            counts += torch.bincount(flat, minlength=counts.numel())
        keep = counts.argsort(descending=True)[: self.vocab_size - 3]
        keep = keep[counts[keep] > 0]
        table = torch.full_like(self.unit_to_token, UNK)
        table[keep.to(table.device)] = torch.arange(3, 3 + len(keep), device=table.device)
        self.unit_to_token.copy_(table)
        self.has_vocab.fill_(True)
        print(f"[discrete_bert] vocabulary: {len(keep)} of {int((counts > 0).sum())} unit "
              f"combinations seen ({int(counts[keep].sum())} of {int(counts.sum())} frames)")

    # ---- model ---------------------------------------------------------------------------
    def _layers(self, ids: Tensor, n: Tensor) -> list[Tensor]:
        h = self.drop(self.norm(self.encoder.add_positions(self.embed(ids))))
        return [h] + self.encoder(h, ~valid_mask(n, ids.shape[1]))

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        ids, n = self.tokens(wavs, lengths)
        return UpstreamOutput(hidden_states=self._layers(ids, n), lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        ids, n = self.tokens(wavs, lengths)
        mask = wav2vec2_mask(n, self.mask_prob, self.mask_span, generator_from_global(),
                             max_len=ids.shape[1], min_spans=1)
        h = self._layers(ids.masked_fill(mask, MASK), n)[-1]
        logits = h[mask] @ self.embed.weight.t() + self.out_bias
        target = ids[mask]
        loss = F.cross_entropy(logits.float(), target) if len(target) else h.sum() * 0.0
        acc = (logits.argmax(-1) == target).float().mean() if len(target) else torch.zeros(())
        return {"loss": loss, "masked_accuracy": acc.detach(),
                "masked_fraction": mask.float().sum() / n.sum().clamp(min=1)}
