"""What the utterance-level tasks share (one label per utterance or sentence: KS, SID, ER,
IC and the text classification tasks): pooling a sequence into one vector, the pooled
linear heads, the label -> class-id lookup and the single-label task itself (SUPERB, Yang
et al. 2021: mean-pool + linear; Devlin et al., 2019: the [CLS] state).

Base pieces only: no task is registered here."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import Task, masked_mean
from speechssl import metrics
from speechssl.errors import ConfigError, ManifestError

POOLINGS = ("cls", "mean", "last")


def pool(x: Tensor, lengths: Tensor, how: str) -> Tensor:
    """(B, T, D), (B,) -> (B, D): the first token ([CLS]), the mean of valid frames, or the
    last valid token (causal upstreams such as gpt)."""
    if how == "cls":
        return x[:, 0]
    if how == "mean":
        return masked_mean(x, lengths)
    return x[torch.arange(x.shape[0], device=x.device), (lengths - 1).clamp(min=0)]


def check_projector_dim(dim) -> int | None:
    """``downstream.projector_dim``: None (pooled features straight into the classifier) or
    the width of s3prl's projection (256 in its utterance-level recipes)."""
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ConfigError(f"downstream.projector_dim must be null or an integer >= 1, got {dim!r}")
    return dim


def projector(feature_dim: int, projector_dim: int | None) -> tuple[nn.Module, int]:
    """s3prl's utterance-level projector (a linear layer to ``projector_dim``, applied per
    frame before the mean pooling; a linear map commutes with the mean, so applying it to
    the pooled vector is the same function) and the width after it."""
    if projector_dim is None:
        return nn.Identity(), feature_dim
    return nn.Linear(feature_dim, projector_dim), projector_dim


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ConfigError(f"downstream.pooling={pooling!r}; valid: {', '.join(POOLINGS)}")
    return pooling


class PooledLinear(nn.Module):
    """(B, T, D), (B,) -> pooled (B, D) -> [projector] -> dropout -> (B, C) logits; by
    default the mean over valid frames, no projector and no dropout (SUPERB's utterance-level
    probe; ``projector_dim``: s3prl's linear projection first, :func:`projector`)."""

    def __init__(self, feature_dim: int, num_outputs: int, pooling: str = "mean",
                 dropout: float = 0.0, projector_dim: int | None = None):
        super().__init__()
        self.pooling = pooling
        self.projector, width = projector(feature_dim, projector_dim)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(width, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.linear(self.drop(self.projector(pool(x, lengths, self.pooling))))


class PooledMultiHead(nn.Module):
    """Mean over valid frames, [the projector,] then one linear layer per label field:
    (B, T, D), (B,) -> [(B, C_1), ..., (B, C_K)]."""

    def __init__(self, feature_dim: int, num_classes: list[int],
                 projector_dim: int | None = None):
        super().__init__()
        self.projector, width = projector(feature_dim, projector_dim)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in num_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        pooled = self.projector(masked_mean(x, lengths))
        return [head(pooled) for head in self.heads]


def class_id(index: dict, label, where: str, what: str = "label", hint: str = "") -> int:
    """``index[label]``; a label unseen in training is a ManifestError naming ``where``
    (``<manifest>:<line>``), ``what`` the label is and an optional ``hint``."""
    if label not in index:
        raise ManifestError(f"{where}: {what} {label!r} never occurs in the training "
                            f"split{hint}")
    return index[label]


class UtteranceClassification(Task):
    """One label per utterance, read from ``label_field``; accuracy. Subclasses set
    ``subset`` and ``label_field`` (and take no options unless they define ``__init__``)."""

    subset = ""
    label_field = "label"
    metric = "accuracy"
    higher_is_better = True
    pooled_input = True  # PooledLinear with mean pooling (a subclass with another sets False)

    def __init__(self, projector_dim: int | None = None):
        self.projector_dim = check_projector_dim(projector_dim)

    def splits(self, corpus) -> dict[str, list[dict]]:
        return {s: corpus.items(self.subset, s) for s in ("train", "dev", "test")}

    def setup(self, train_items: list[dict]) -> None:
        self.classes = sorted({self.reference(it) for it in train_items})
        self.index = {c: i for i, c in enumerate(self.classes)}

    def build_probe(self, feature_dim: int) -> nn.Module:
        return PooledLinear(feature_dim, len(self.classes), projector_dim=self.projector_dim)

    def targets(self, batch: dict, device) -> Tensor:
        ids = [class_id(self.index, self.reference(it), f"{it.get('_manifest')}:{it.get('_line')}")
               for it in batch["items"]]
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
