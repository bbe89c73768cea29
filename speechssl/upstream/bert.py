"""BERT: Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding" (sentence-order prediction from Lan et al., 2020, "ALBERT").

Token + segment + learned position embeddings, a post-LN transformer encoder, masked LM
(15% of tokens: 80% [MASK], 10% random, 10% kept; output layer tied to the token
embeddings) plus a sentence-pair loss on the [CLS] state: next-sentence prediction (NSP:
the second sentence replaced by another one half of the time) or sentence-order prediction
(SOP: the two sentences swapped half of the time), switchable with ``pair_task``.
``share_layers``: ALBERT's cross-layer parameter sharing (one layer's weights at every depth;
ALBERT's factorised embedding is not reproduced).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.nn.masking import valid_mask
from speechssl.nn.random import generator_from_global
from speechssl.nn.transformer import TransformerEncoder
from speechssl.text.data import pad_ids
from speechssl.text.tokenizer import SPECIALS, Encoded, TextTokenizer, train_wordpiece
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream

PAIR_TASKS = ("sop", "nsp", "none")


def segment_ids(ids: Tensor, sep_id: int | None) -> Tensor:
    """BERT segment ids from the token ids: 0 up to and including the first [SEP], 1 after.
    (B, T) long -> (B, T) long."""
    if sep_id is None:
        return torch.zeros_like(ids)
    is_sep = (ids == sep_id).long()
    return ((is_sep.cumsum(1) - is_sep) > 0).long()


class TextEmbedding(nn.Module):
    """Token + (optional) segment + learned position embeddings, LayerNorm (post-LN models
    only), dropout: (B, T) ids, (B, T) segments -> (B, T, D)."""

    def __init__(self, vocab_size: int, dim: int, max_length: int, num_segments: int,
                 dropout: float, norm: bool = True):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_length, dim)
        self.segments = nn.Embedding(num_segments, dim) if num_segments else None
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        for emb in (self.tokens, self.positions, self.segments):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)

    def forward(self, ids: Tensor, segments: Tensor | None = None) -> Tensor:
        T = ids.shape[1]
        if T > self.positions.num_embeddings:
            raise ValueError(f"{T} tokens exceed max_length={self.positions.num_embeddings}")
        x = self.tokens(ids) + self.positions(torch.arange(T, device=ids.device))
        if self.segments is not None and segments is not None:
            x = x + self.segments(segments)
        return self.dropout(self.norm(x))


def mlm_corrupt(ids: Tensor, lengths: Tensor, special: Tensor, mask_id: int, vocab_low: int,
                vocab_high: int, g: torch.Generator, ratio: float = 0.15, mask_prob: float = 0.8,
                random_prob: float = 0.1) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM input: ``ratio`` of the real, non-special tokens of each sequence
    (at least one) are chosen; of those 80% become [MASK], 10% a random token in
    [vocab_low, vocab_high), 10% stay. (B, T) ids -> (corrupted ids, labels with -100 where
    nothing was chosen)."""
    B, T = ids.shape
    cand = valid_mask(lengths, T) & ~special
    score = torch.rand(B, T, generator=g).to(ids.device).masked_fill(~cand, 2.0)
    n = (cand.sum(1).float() * ratio).round().long().clamp(min=1)
    n = torch.minimum(n, cand.sum(1))
    rank = score.argsort(1).argsort(1)
    chosen = (rank < n[:, None]) & cand
    labels = ids.masked_fill(~chosen, -100)
    u = torch.rand(B, T, generator=g).to(ids.device)
    to_mask = chosen & (u < mask_prob)
    to_rand = chosen & (u >= mask_prob) & (u < mask_prob + random_prob)
    rand_ids = torch.randint(vocab_low, vocab_high, (B, T), generator=g).to(ids.device)
    out = ids.masked_fill(to_mask, mask_id)
    out = torch.where(to_rand, rand_ids, out)
    return out, labels


class TextUpstream(Upstream):
    """Base of the text upstreams: token ids (B, T) long in, one hidden state per token out.
    The tokenizer (WordPiece, ``vocab_size`` at most) is trained in ``prepare`` on the
    corpus's ``text-pretrain`` subset, written to ``<run>/tokenizer.json`` and kept in the
    ``tokenizer_json`` buffer of the weights."""

    tuning_modes = TRANSFORMER_TUNING

    modality = "text"
    downsample_rate = 1
    sample_rate = 1
    pretrain_subset = "text-pretrain"

    def __init__(self, vocab_size: int, max_length: int, min_frequency: int = 2):
        super().__init__()
        if vocab_size < 16:
            raise ConfigError(f"upstream.vocab_size={vocab_size}: too small (at least 16)")
        self.vocab_size, self.max_length, self.min_frequency = vocab_size, max_length, min_frequency
        self.register_buffer("tokenizer_json", torch.zeros(0, dtype=torch.uint8))
        self._tokenizer: TextTokenizer | None = None

    # -- tokenizer -------------------------------------------------------------------
    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer_json.numel() > 0

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            if not self.has_tokenizer:
                raise SpeechSSLError(f"upstream {type(self).__name__} has no tokenizer yet: "
                                     f"pre-train it (mode=pretrain) or load its checkpoint")
            text = bytes(self.tokenizer_json.cpu().tolist()).decode("utf-8")
            self._tokenizer = TextTokenizer.from_json(text, self.max_length)
        return self._tokenizer

    def set_tokenizer(self, tok: TextTokenizer) -> None:
        if tok.vocab_size > self.vocab_size:
            raise ConfigError(f"tokenizer has {tok.vocab_size} entries, more than "
                              f"upstream.vocab_size={self.vocab_size}")
        data = torch.tensor(list(tok.to_json().encode("utf-8")), dtype=torch.uint8)
        self.tokenizer_json = data.to(self.tokenizer_json.device)
        self._tokenizer = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "tokenizer_json"
        if key in state_dict:  # its length is the tokenizer's: take the stored shape
            self.tokenizer_json = torch.empty_like(state_dict[key], device=self.tokenizer_json.device)
        self._tokenizer = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, item: dict) -> Encoded:
        return self.tokenizer.encode(item)

    def encode_ids(self, item: dict) -> list[int]:
        return self.encode(item).ids

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def prepare(self, corpus, run_dir, device) -> None:
        """Train the tokenizer (unless resumed weights carry one) and save it in the run."""
        from pathlib import Path

        from speechssl.atomic import atomic_write_text
        from speechssl.text.data import text_items

        if not self.has_tokenizer:
            items = text_items(corpus, self.pretrain_subset, "train")
            texts = [t for it in items for t in (it.get("text"), it.get("text_pair")) if t]
            trained = train_wordpiece(texts, self.vocab_size, self.min_frequency)
            self.set_tokenizer(TextTokenizer.from_json(trained.to_str(), self.max_length))
        atomic_write_text(Path(run_dir) / "tokenizer.json", self.tokenizer.to_json())

    def special_ids(self) -> dict[str, int]:
        """pad/unk/cls/sep/mask ids and the vocabulary size in use. Before a tokenizer exists
        (a fresh model) these are the layout every trained tokenizer has: the five special
        tokens first, in SPECIALS order, and ``vocab_size`` entries."""
        if self.has_tokenizer:
            tok = self.tokenizer
            out = {"pad": tok.pad_id, "unk": tok.unk_id, "cls": tok.cls_id, "sep": tok.sep_id,
                   "mask": tok.mask_id}
            return {**out, "vocab": tok.vocab_size}
        return {**{k: i for i, k in enumerate(SPECIALS)}, "vocab": self.vocab_size}

    def special_mask(self, ids: Tensor) -> Tensor:
        special = self.special_ids()
        out = torch.zeros_like(ids, dtype=torch.bool)
        for k in SPECIALS:
            if special[k] is not None:
                out |= ids == special[k]
        return out

    @torch.no_grad()
    def describe(self) -> dict:
        device = next(self.parameters()).device
        out = self(torch.zeros(1, 8, dtype=torch.long, device=device),
                   torch.tensor([8], device=device))
        return {"num_layers": len(out.hidden_states), "hidden_size": out.hidden_states[0].shape[-1]}


def split_pair(ids: Tensor, cls_id: int, sep_id: int) -> tuple[Tensor, Tensor] | None:
    """(T,) ids of ``[CLS] A [SEP] B [SEP]`` (no padding) -> (A, B), or None if not a pair."""
    seps = (ids == sep_id).nonzero().flatten().tolist()
    if len(seps) < 2 or ids[0] != cls_id:
        return None
    return ids[1: seps[0]], ids[seps[0] + 1: seps[1]]


def join_pair(a: Tensor, b: Tensor, cls_id: int, sep_id: int) -> Tensor:
    """(A, B) -> (T,) ids of ``[CLS] A [SEP] B [SEP]``."""
    c, s = a.new_tensor([cls_id]), a.new_tensor([sep_id])
    return torch.cat([c, a, s, b, s])


def make_pair_batch(ids: Tensor, lengths: Tensor, task: str, cls_id: int, sep_id: int, pad_id: int,
                    g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Sentence-pair examples for SOP or NSP, half of them negatives (label 1).

    SOP: a negative has its two sentences swapped. NSP: a negative keeps its first sentence
    and takes the second sentence of the next sequence in the batch (its own when B = 1,
    which SOP-style swapping then replaces). Sequences that are not pairs get label -100.
    (B, T) ids, (B,) lengths -> new (B, T') ids, (B,) lengths, (B,) labels.
    """
    B = ids.shape[0]
    pairs = [split_pair(ids[b, : int(lengths[b])], cls_id, sep_id) for b in range(B)]
    flip = torch.rand(B, generator=g) < 0.5
    rows, labels = [], []
    for b, pair in enumerate(pairs):
        if pair is None or task == "none":
            rows.append(ids[b, : int(lengths[b])])
            labels.append(-100)
            continue
        a, second = pair
        if flip[b]:
            other = pairs[(b + 1) % B]
            if task == "nsp" and other is not None and (b + 1) % B != b:
                second = other[1]
            else:
                a, second = second, a
        rows.append(join_pair(a, second, cls_id, sep_id))
        labels.append(int(flip[b]))
    new, new_lengths = pad_ids([r.cpu() for r in rows], pad_id)
    return new.to(ids.device), new_lengths.to(ids.device), torch.tensor(labels, device=ids.device)


@register_upstream("bert")
class BERT(TextUpstream):
    """Hidden states: the embedding output and every encoder layer, (B, T, hidden) each."""

    contract_options = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
                        "vocab_size": 100}

    def __init__(self, vocab_size: int = 2000, hidden_size: int = 128, num_layers: int = 4,
                 num_heads: int = 4, ff_size: int = 512, dropout: float = 0.1,
                 max_length: int = 256, type_vocab_size: int = 2, pair_task: str = "sop",
                 mask_ratio: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1,
                 min_frequency: int = 2, share_layers: bool = False):
        super().__init__(vocab_size, max_length, min_frequency)
        if pair_task not in PAIR_TASKS:
            raise ConfigError(f"upstream.pair_task={pair_task!r}; valid: {', '.join(PAIR_TASKS)}")
        self.pair_task = pair_task
        self.mask_ratio, self.mask_prob, self.random_prob = mask_ratio, mask_prob, random_prob
        self.embed = TextEmbedding(vocab_size, hidden_size, max_length, type_vocab_size, dropout)
        self.encoder = TransformerEncoder(hidden_size, num_layers, num_heads, ff_size, dropout,
                                          dropout, norm_first=False, position="none",
                                          share_layers=share_layers)
        self.mlm_transform = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                           nn.LayerNorm(hidden_size))
        self.mlm_bias = nn.Parameter(torch.zeros(vocab_size))
        self.pooler = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh())
        self.pair_head = nn.Linear(hidden_size, 2)

    def _layers(self, ids: Tensor, lengths: Tensor) -> list[Tensor]:
        """(B, T) ids -> [(B, T, H)] * (num_layers + 1)."""
        sep = self.special_ids()["sep"]
        pad = ~valid_mask(lengths, ids.shape[1])
        h = self.embed(ids, segment_ids(ids, sep))
        return [h] + self.encoder(h, pad)

    def forward(self, ids: Tensor, lengths: Tensor) -> UpstreamOutput:
        """ids: (B, T) long token ids ([CLS] A [SEP] (B [SEP])); segments follow the [SEP]."""
        ids = ids.long()
        return UpstreamOutput(hidden_states=self._layers(ids, lengths), lengths=lengths.long())

    def mlm_logits(self, h: Tensor) -> Tensor:
        """(B, T, H) -> (B, T, vocab_size), decoder tied to the token embeddings."""
        return self.mlm_transform(h) @ self.embed.tokens.weight.t() + self.mlm_bias

    def pretrain_loss(self, ids: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        sp = self.special_ids()
        g = generator_from_global()
        ids = ids.long()
        ids, lengths, pair_labels = make_pair_batch(ids, lengths, self.pair_task, sp["cls"],
                                                    sp["sep"], sp["pad"], g)
        special = self.special_mask(ids)
        corrupted, labels = mlm_corrupt(ids, lengths, special, sp["mask"], len(SPECIALS),
                                        sp["vocab"], g, self.mask_ratio, self.mask_prob,
                                        self.random_prob)
        h = self._layers(corrupted, lengths)[-1]
        logits = self.mlm_logits(h)
        mlm = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
        chosen = labels != -100
        out = {"mlm_loss": mlm.detach(),
               "mlm_accuracy": (logits.argmax(-1)[chosen] == labels[chosen]).float().mean()}
        loss = mlm
        if (pair_labels != -100).any():
            pair_logits = self.pair_head(self.pooler(h[:, 0]))
            pair = F.cross_entropy(pair_logits, pair_labels, ignore_index=-100)
            known = pair_labels != -100
            out[f"{self.pair_task}_loss"] = pair.detach()
            out[f"{self.pair_task}_accuracy"] = (pair_logits.argmax(-1)[known]
                                                 == pair_labels[known]).float().mean()
            loss = loss + pair
        return {"loss": loss, **out}
