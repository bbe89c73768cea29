"""IC: intent classification (Fluent Speech Commands), mean-pool + three linear heads over
action, object and location, accuracy of the whole intent (SUPERB, Yang et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import Task, register_task
from downstream.utterance import PooledMultiHead, check_projector_dim, class_id
from speechssl import metrics
from speechssl.errors import ManifestError

FIELDS = ("action", "object", "location")


@register_task("ic")
class IntentClassification(Task):
    """An intent is the tuple (action, object, location); the loss is the sum of the three
    cross-entropies and an utterance is right only when all three fields are right."""

    subset = "ic"
    metric = "accuracy"
    higher_is_better = True
    pooled_input = True  # PooledMultiHead: the mean over valid frames, then linear heads

    def __init__(self, projector_dim: int | None = None):
        self.fields = FIELDS
        self.projector_dim = check_projector_dim(projector_dim)

    def splits(self, corpus) -> dict[str, list[dict]]:
        return {s: corpus.items(self.subset, s) for s in ("train", "dev", "test")}

    def setup(self, train_items: list[dict]) -> None:
        refs = [self.reference(it) for it in train_items]
        self.classes = [sorted({r[k] for r in refs}) for k in range(len(self.fields))]
        self.index = [{c: i for i, c in enumerate(cs)} for cs in self.classes]

    def build_probe(self, feature_dim: int) -> nn.Module:
        return PooledMultiHead(feature_dim, [len(cs) for cs in self.classes],
                               projector_dim=self.projector_dim)

    def targets(self, batch: dict, device) -> Tensor:
        """(B, K) class ids of the K fields; a label unseen in training is a ManifestError."""
        rows = []
        for it in batch["items"]:
            where = f"{it.get('_manifest')}:{it.get('_line')}"
            rows.append([class_id(self.index[k], value, where, what=field) for k, (field, value)
                         in enumerate(zip(self.fields, self.reference(it), strict=True))])
        return torch.tensor(rows, device=device)

    def loss(self, probe, features, lengths, batch) -> Tensor:
        targets = self.targets(batch, features.device)
        logits = probe(features, lengths)
        return sum(F.cross_entropy(lg, targets[:, k]) for k, lg in enumerate(logits))

    def predict(self, probe, features, lengths, batch) -> list[tuple[str, ...]]:
        ids = [lg.argmax(-1).tolist() for lg in probe(features, lengths)]
        return [tuple(self.classes[k][ids[k][b]] for k in range(len(self.fields)))
                for b in range(features.shape[0])]

    def reference(self, item: dict) -> tuple[str, ...]:
        missing = [f for f in self.fields if f not in item]
        if missing:
            raise ManifestError(f"{item.get('_manifest')}:{item.get('_line')}: "
                                f"no {', '.join(map(repr, missing))} field")
        return tuple(str(item[f]) for f in self.fields)

    def score(self, predictions, references) -> dict[str, float]:
        out = {"accuracy": metrics.accuracy(predictions, references)}
        for k, field in enumerate(self.fields):
            out[f"{field}_accuracy"] = metrics.accuracy([p[k] for p in predictions],
                                                        [r[k] for r in references])
        return out
