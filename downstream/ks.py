"""KS: keyword spotting (Speech Commands v1, 12 classes), mean-pool + linear, accuracy."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import Task, masked_mean, register_task
from speechssl import metrics
from speechssl.errors import ManifestError


class PooledLinear(nn.Module):
    """Mean over valid frames, then one linear layer: (B, T, D) -> (B, classes)."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.linear(masked_mean(x, lengths))


class UtteranceClassification(Task):
    """One label per utterance, read from ``label_field``; accuracy."""

    subset = ""
    label_field = "label"
    metric = "accuracy"
    higher_is_better = True

    def splits(self, corpus) -> dict[str, list[dict]]:
        return {s: corpus.items(self.subset, s) for s in ("train", "dev", "test")}

    def setup(self, train_items: list[dict]) -> None:
        self.classes = sorted({self.reference(it) for it in train_items})
        self.index = {c: i for i, c in enumerate(self.classes)}

    def build_probe(self, feature_dim: int) -> nn.Module:
        return PooledLinear(feature_dim, len(self.classes))

    def targets(self, batch: dict, device) -> Tensor:
        ids = []
        for it in batch["items"]:
            label = self.reference(it)
            if label not in self.index:
                raise ManifestError(f"{it.get('_manifest')}:{it.get('_line')}: label {label!r} "
                                    f"never occurs in the training split")
            ids.append(self.index[label])
        return torch.tensor(ids, device=device)

    def loss(self, probe, features, lengths, batch) -> Tensor:
        return F.cross_entropy(probe(features, lengths), self.targets(batch, features.device))

    def predict(self, probe, features, lengths, batch) -> list:
        return [self.classes[i] for i in probe(features, lengths).argmax(-1).tolist()]

    def reference(self, item: dict):
        try:
            return item[self.label_field]
        except KeyError:
            raise ManifestError(f"{item.get('_manifest')}:{item.get('_line')}: "
                                f"no {self.label_field!r} field") from None

    def score(self, predictions, references) -> dict[str, float]:
        return {"accuracy": metrics.accuracy(predictions, references)}


@register_task("ks")
class KeywordSpotting(UtteranceClassification):
    subset = "ks"
    label_field = "label"

    def __init__(self):
        pass
