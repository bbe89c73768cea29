"""Sentence(-pair) classification: the [CLS] state of the weighted layer sum -> linear layer
(Devlin et al., 2019, Fig. 4 a/b), GLUE metrics (Wang et al., 2019) on real GLUE sets:
Matthews correlation (CoLA), F1 + accuracy (MRPC, QQP), Pearson/Spearman (STS-B, regression
with one output and a squared-error loss), accuracy otherwise."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import register_task
from downstream.text.common import TextTask, label_of, where
from downstream.utterance import PooledLinear, check_pooling, class_id
from speechssl import metrics
from speechssl.errors import ManifestError

# GLUE task -> (headline metric, is regression)
GLUE_METRICS = {"CoLA": ("matthews", False), "MRPC": ("f1", False), "QQP": ("f1", False),
                "STS-B": ("pearson", True)}


@register_task("sst2")
class SentenceClassification(TextTask):
    """One text (``text``) -> ``label``. On the synthesized corpus: sentiment under negation
    and contrast; on ``corpus=glue``: the single-sentence GLUE task (SST-2, CoLA)."""

    subset = "text-sst2"
    metric = "accuracy"
    higher_is_better = True

    def __init__(self, pooling: str = "cls", dropout: float = 0.1):
        self.pooling, self.dropout = check_pooling(pooling), dropout
        self.regression = False
        self.pooled_input = self.pooling == "mean"

    def splits(self, corpus) -> dict[str, list[dict]]:
        out = super().splits(corpus)
        glue = self.corpus_meta.get("glue_task")
        self.metric, self.regression = GLUE_METRICS.get(glue, ("accuracy", False))
        return out

    def setup(self, train_items: list[dict]) -> None:
        if self.regression:
            self.classes = []
            return
        self.classes = sorted({label_of(it) for it in train_items})
        self.index = {c: i for i, c in enumerate(self.classes)}

    def build_probe(self, feature_dim: int) -> nn.Module:
        return PooledLinear(feature_dim, 1 if self.regression else len(self.classes),
                            self.pooling, self.dropout)

    def targets(self, batch: dict, device) -> Tensor:
        items = batch["items"]
        if self.regression:
            return torch.tensor([self.reference(it) for it in items], device=device)
        hint = f" (labels: {', '.join(self.classes)})"
        return torch.tensor([class_id(self.index, self.reference(it), where(it), hint=hint)
                             for it in items], device=device)

    def loss(self, probe, features, lengths, batch) -> Tensor:
        out = probe(features, lengths)
        y = self.targets(batch, features.device)
        return F.mse_loss(out[:, 0], y.float()) if self.regression else F.cross_entropy(out, y)

    def predict(self, probe, features, lengths, batch) -> list:
        out = probe(features, lengths)
        if self.regression:
            return out[:, 0].tolist()
        return [self.classes[i] for i in out.argmax(-1).tolist()]

    def reference(self, item: dict):
        label = label_of(item)
        if self.regression:
            try:
                return float(label)
            except ValueError:
                raise ManifestError(f"{where(item)}: label {label!r} is not a number") from None
        return label

    def score(self, predictions, references) -> dict[str, float]:
        if self.regression:
            return {"pearson": metrics.pearson(predictions, references),
                    "spearman": metrics.spearman(predictions, references)}
        out = {"accuracy": metrics.accuracy(predictions, references)}
        if self.metric == "matthews":
            out["matthews"] = metrics.matthews_corrcoef(predictions, references)
        if self.metric == "f1":
            out["f1"] = metrics.binary_f1(predictions, references, positive="1")
        return out
