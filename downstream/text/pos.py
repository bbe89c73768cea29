"""Part-of-speech tagging as token classification: each word's first sub-token state ->
linear layer over the tag set (Devlin et al., 2019, Fig. 4 d; NER/POS protocol), accuracy
over words (UPOS, as CoNLL-U)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import register_task
from downstream.text.common import TextTask, encoding, where
from speechssl import metrics
from speechssl.errors import ManifestError


def first_subtokens(word_ids: list[int | None]) -> dict[int, int]:
    """{word index: position of its first token}; words cut off by truncation are absent."""
    first: dict[int, int] = {}
    for t, w in enumerate(word_ids):
        if w is not None and w not in first:
            first[w] = t
    return first


@register_task("pos")
class POSTagging(TextTask):
    subset = "text-pos"
    metric = "accuracy"
    higher_is_better = True

    def __init__(self, dropout: float = 0.1):
        self.dropout = dropout

    def setup(self, train_items: list[dict]) -> None:
        self.tags = sorted({t for it in train_items for t in self.reference(it)})
        self.index = {t: i for i, t in enumerate(self.tags)}

    def build_probe(self, feature_dim: int) -> nn.Module:
        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(feature_dim, len(self.tags)))

    def loss(self, probe, features, lengths, batch) -> Tensor:
        B, T, _ = features.shape
        target = torch.full((B, T), -100, dtype=torch.long)
        for b, it in enumerate(batch["items"]):
            tags = self.reference(it)
            for w, t in first_subtokens(encoding(it).word_ids).items():
                if tags[w] not in self.index:
                    raise ManifestError(f"{where(it)}: tag {tags[w]!r} never occurs in the "
                                        f"training split")
                target[b, t] = self.index[tags[w]]
        logits = probe(features)
        return F.cross_entropy(logits.transpose(1, 2), target.to(features.device),
                               ignore_index=-100)

    def predict(self, probe, features, lengths, batch) -> list[list[str | None]]:
        ids = probe(features).argmax(-1).tolist()
        out = []
        for b, it in enumerate(batch["items"]):
            first = first_subtokens(encoding(it).word_ids)
            n = len(self.reference(it))
            out.append([self.tags[ids[b][first[w]]] if w in first else None for w in range(n)])
        return out

    def reference(self, item: dict) -> list[str]:
        words, tags = item.get("words"), item.get("tags")
        if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags):
            raise ManifestError(f"{where(item)}: a POS item needs 'words' and 'tags' lists of "
                                f"equal length")
        return [str(t) for t in tags]

    def score(self, predictions, references) -> dict[str, float]:
        flat_p = [p for ps in predictions for p in ps]
        flat_r = [r for rs in references for r in rs]
        return {"accuracy": metrics.accuracy(flat_p, flat_r),
                "sentence_accuracy": metrics.accuracy([tuple(p) for p in predictions],
                                                      [tuple(r) for r in references])}
