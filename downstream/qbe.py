"""QbE: query-by-example spoken term detection with no training (SUPERB, Yang et al. 2021;
QUESST 2014): subsequence DTW on each layer's frames, per-query z-norm, MTWV and MAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from downstream.base import Task, register_task
from speechssl import metrics
from speechssl.atomic import atomic_write_text
from speechssl.errors import ConfigError, ManifestError


def dtw_distances(queries: list[Tensor], docs: list[Tensor], device: str = "cpu") -> Tensor:
    """Subsequence-DTW distance (cosine frame distance, normalized by query length) of every
    query against every document: Q tensors (N_q, D), K tensors (M_k, D) -> (Q, K).

    The documents are normalized and padded once; each query's (K, N_q, M) cost tensor
    (``1 - cos``, as ``metrics.cosine_distance``) comes from one flat matrix product,
    computed on ``device``; the result is on the CPU."""
    K, M, D = len(docs), max(d.shape[0] for d in docs), docs[0].shape[1]
    padded = torch.zeros(K, M, D)
    for k, d in enumerate(docs):
        padded[k, : d.shape[0]] = F.normalize(d.float(), dim=-1)
    flat = padded.reshape(K * M, D).to(device)
    lengths = torch.tensor([d.shape[0] for d in docs], device=device)
    out = torch.empty(len(queries), K)
    for q, query in enumerate(queries):
        qn = F.normalize(query.to(device).float(), dim=-1)  # (N, D)
        cost = 1.0 - (flat @ qn.T).reshape(K, M, -1).transpose(1, 2)  # (K, N, M)
        out[q] = metrics.subsequence_dtw(cost, lengths).cpu()
    return out


def znorm(scores: Tensor) -> Tensor:
    """Per-query normalization over documents: (Q, K) -> (Q, K) with zero mean, unit std."""
    return (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp(min=1e-8)


@register_task("qbe")
class QueryByExample(Task):
    """Spoken queries searched in spoken documents with the frozen features of one layer.

    A document is a hit for a query when the query's ``term`` is one of the words of the
    document's ``text``. The layer with the best dev MTWV is used on test (``layer`` fixes
    it). Score = z-normalized negative DTW distance.
    """

    metric = "mtwv"
    higher_is_better = True
    trainable = False
    subset = "qbe"

    def __init__(self, layer: int | None = None, beta: float = 999.9):
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)
                                  or layer < 0):
            raise ConfigError(f"downstream.layer must be null or a layer index >= 0, "
                              f"got {layer!r}")
        if isinstance(beta, bool) or not isinstance(beta, int | float) or beta <= 0:
            raise ConfigError(f"downstream.beta must be > 0, got {beta!r}")
        self.layer, self.beta = layer, float(beta)
        self.chosen: int | None = layer

    def splits(self, corpus) -> dict[str, list[dict]]:
        return {s: corpus.items(self.subset, s) for s in ("dev", "test")}

    def layer_weights(self, num_layers: int) -> list[float]:
        return [float(i == self.chosen) for i in range(num_layers)]

    def roles(self, items: list[dict]) -> tuple[list[int], list[int], np.ndarray]:
        """Query and document indices into ``items`` and the (Q, K) relevance labels."""
        queries, docs = [], []
        for i, it in enumerate(items):
            where = f"{it.get('_manifest')}:{it.get('_line')}"
            kind = it.get("kind")
            field = {"query": "term", "doc": "text"}.get(kind)
            if field is None:
                raise ManifestError(f"{where}: 'kind' must be 'query' or 'doc', got {kind!r}")
            if not isinstance(it.get(field), str) or not it[field].strip():
                raise ManifestError(f"{where}: a {kind} needs a non-empty {field!r} field")
            (queries if kind == "query" else docs).append(i)
        if not queries or not docs:
            raise ManifestError(f"{items[0].get('_manifest') if items else 'qbe'}: "
                                f"needs at least one query and one doc")
        words = [set(items[d]["text"].split()) for d in docs]
        labels = np.array([[items[q]["term"] in w for w in words] for q in queries])
        return queries, docs, labels

    def layer_scores(self, feats: list[Tensor], queries: list[int], docs: list[int],
                     layer: int) -> np.ndarray:
        """(Q, K) z-normed detection scores of one layer."""
        dist = dtw_distances([feats[q][layer] for q in queries], [feats[d][layer] for d in docs],
                             self.device)
        return znorm(-dist).numpy()

    def evaluate_split(self, split, predictions, items, out_dir=None) -> dict[str, float]:
        """``predictions`` are the frozen (L, T, D) features; dev picks the layer."""
        queries, docs, labels = self.roles(items)
        num_layers = predictions[0].shape[0]
        if self.layer is not None and self.layer >= num_layers:
            raise ConfigError(f"downstream.layer={self.layer} but the upstream has "
                              f"{num_layers} layers")
        if split == "dev" and self.layer is None:
            found = []
            for layer in range(num_layers):
                s = self.layer_scores(predictions, queries, docs, layer)
                found.append((metrics.mtwv(s, labels, self.beta),
                              metrics.mean_average_precision(s, labels), -layer))
            self.chosen = -max(found)[2]
        if self.chosen is None:
            raise ConfigError("qbe: no layer chosen (score dev first or set downstream.layer)")
        scores = self.layer_scores(predictions, queries, docs, self.chosen)
        if out_dir is not None:
            rows = [{"query": items[q]["id"], "doc": items[d]["id"], "score": float(scores[a, b]),
                     "hit": bool(labels[a, b])}
                    for a, q in enumerate(queries) for b, d in enumerate(docs)]
            atomic_write_text(Path(out_dir) / f"qbe_{split}_scores.jsonl",
                              "".join(json.dumps(r) + "\n" for r in rows))
        # x 100, as SUPERB reports them (the suite's reference points are in these units)
        return {"mtwv": 100 * metrics.mtwv(scores, labels, self.beta),
                "map": 100 * metrics.mean_average_precision(scores, labels),
                "layer": float(self.chosen)}
