"""Extractive QA (SQuAD v1.1; Devlin et al., 2019, Fig. 4 c): ``[CLS] question [SEP]
passage [SEP]``; a start and an end vector are scored against every passage token, softmax
over the passage, and the answer is the best span with start <= end (at most
``max_answer_tokens``). Exact match and F1 after SQuAD's answer normalization."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import register_task
from downstream.text.common import TextTask, encoding, where
from speechssl import metrics
from speechssl.errors import ManifestError

NEG = -1e9


def passage_mask(seq_ids: list[int | None], T: int) -> Tensor:
    """(T,) bool: True at the passage's tokens (sequence id 1)."""
    m = torch.zeros(T, dtype=torch.bool)
    for t, s in enumerate(seq_ids[:T]):
        m[t] = s == 1
    return m


def answer_tokens(enc, start: int, end: int) -> tuple[int, int] | None:
    """First and last passage token overlapping characters [start, end), or None (truncated)."""
    hits = [t for t, (s, (a, b)) in enumerate(zip(enc.sequence_ids, enc.offsets, strict=True))
            if s == 1 and a < end and b > start]
    return (hits[0], hits[-1]) if hits else None


def best_span(start: Tensor, end: Tensor, max_len: int) -> tuple[int, int]:
    """(T,) start and end scores (-inf outside the passage) -> (i, j), i <= j < i + max_len,
    maximizing start[i] + end[j]."""
    T = start.shape[0]
    score = start[:, None] + end[None, :]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    score = score.masked_fill((j < i) | (j - i >= max_len), float("-inf"))
    flat = int(score.argmax())
    return flat // T, flat % T


class SpanHead(nn.Module):
    """(B, T, D) -> start and end logits (B, T) each: two learned vectors (and biases)."""

    def __init__(self, feature_dim: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(feature_dim, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.linear(self.drop(x))
        return out[..., 0], out[..., 1]


@register_task("qa")
class ExtractiveQA(TextTask):
    subset = "text-qa"
    metric = "f1"
    higher_is_better = True

    def __init__(self, max_answer_tokens: int = 30, dropout: float = 0.1):
        self.max_answer_tokens, self.dropout = max_answer_tokens, dropout

    def build_probe(self, feature_dim: int) -> nn.Module:
        return SpanHead(feature_dim, self.dropout)

    def _masked_logits(self, probe, features, batch) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = features.shape
        mask = torch.stack([passage_mask(encoding(it).sequence_ids, T) for it in batch["items"]])
        mask = mask.to(features.device)
        start, end = probe(features)
        return start.masked_fill(~mask, NEG), end.masked_fill(~mask, NEG), mask

    def loss(self, probe, features, lengths, batch) -> Tensor:
        start, end, _ = self._masked_logits(probe, features, batch)
        targets = []
        for it in batch["items"]:
            answer = self.answers(it)[0]
            span = answer_tokens(encoding(it), answer["start"],
                                 answer["start"] + len(answer["text"]))
            targets.append(span or (-100, -100))  # answer cut off by truncation: no loss
        t = torch.tensor(targets, device=features.device)
        if (t[:, 0] == -100).all():
            return start.sum() * 0.0
        return (F.cross_entropy(start, t[:, 0], ignore_index=-100)
                + F.cross_entropy(end, t[:, 1], ignore_index=-100)) / 2

    def predict(self, probe, features, lengths, batch) -> list[str]:
        start, end, mask = self._masked_logits(probe, features, batch)
        out = []
        for b, it in enumerate(batch["items"]):
            if not mask[b].any():
                out.append("")
                continue
            s = start[b].log_softmax(-1).masked_fill(~mask[b], float("-inf")).cpu()
            e = end[b].log_softmax(-1).masked_fill(~mask[b], float("-inf")).cpu()
            i, j = best_span(s, e, self.max_answer_tokens)
            offsets = encoding(it).offsets
            out.append(it["text_pair"][offsets[i][0]: offsets[j][1]])
        return out

    def answers(self, item: dict) -> list[dict]:
        answers, passage = item.get("answers"), item.get("text_pair")
        if not isinstance(passage, str) or not isinstance(answers, list) or not answers:
            raise ManifestError(f"{where(item)}: a QA item needs 'text_pair' (the passage) and "
                                f"a non-empty 'answers' list")
        for a in answers:
            if (not isinstance(a, dict) or not isinstance(a.get("text"), str)
                    or not isinstance(a.get("start"), int)
                    or passage[a["start"]: a["start"] + len(a["text"])] != a["text"]):
                raise ManifestError(f"{where(item)}: answer {a!r} is not the passage text at "
                                    f"its 'start' offset")
        return answers

    def reference(self, item: dict) -> list[str]:
        return [a["text"] for a in self.answers(item)]

    def score(self, predictions, references) -> dict[str, float]:
        return metrics.squad_scores(predictions, references)
