"""QbE: query-by-example spoken term detection with no training (SUPERB, Yang et al. 2021;
QUESST 2014): s3prl's quesst14_dtw pipeline on each layer's frames (per-dimension feature
normalization, exp(1 - cos) - 1 distances min-max normalized per query frame, asymmetric
subsequence DTW, queries under 5 frames scored 0, per-query z-norm), MTWV and MAP."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from downstream.base import Task, register_task
from speechssl import metrics
from speechssl.atomic import atomic_write_text
from speechssl.errors import ConfigError, ManifestError

MIN_QUERY_FRAMES = 5  # s3prl's quesst14_dtw: a shorter query scores 0 against every document


def feature_normalizer(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std (>= 1e-9) over every frame of ``feats`` (queries and
    documents of a split together), as s3prl's ``feature_normalization``."""
    frames = torch.cat([f.float() for f in feats])
    return frames.mean(0), frames.std(0).clamp(min=1e-9)


def dtw_distances(queries: list[Tensor], docs: list[Tensor], device: str = "cpu") -> Tensor:
    """s3prl's QbE matching cost of every query against every document: Q tensors (N_q, D),
    K tensors (M_k, D) -> (Q, K), already feature-normalized (:func:`feature_normalizer`).

    Frame distance ``exp(1 - cos) - 1`` (s3prl's ``cosine_exp``), each query frame's row
    min-max normalized over the document's frames (``minmax_norm``), then subsequence DTW
    with the asymmetric step pattern, open begin and end, normalized by the query length
    (``metrics.subsequence_dtw``, = dtw-python's ``normalizedDistance``). A query shorter than
    ``MIN_QUERY_FRAMES`` frames gets distance 0 to every document (s3prl scores it 0).
    The documents are normalized and padded once; each query's (K, N_q, M) cost tensor comes
    from one flat matrix product, computed on ``device``; the result is on the CPU."""
    K, M, D = len(docs), max(d.shape[0] for d in docs), docs[0].shape[1]
    padded = torch.zeros(K, M, D)
    for k, d in enumerate(docs):
        padded[k, : d.shape[0]] = F.normalize(d.float(), dim=-1)
    flat = padded.reshape(K * M, D).to(device)
    lengths = torch.tensor([d.shape[0] for d in docs], device=device)
    pad = (torch.arange(M, device=device)[None] >= lengths[:, None])[:, None, :]  # (K, 1, M)
    out = torch.zeros(len(queries), K)
    for q, query in enumerate(queries):
        if query.shape[0] < MIN_QUERY_FRAMES:
            continue
        qn = F.normalize(query.to(device).float(), dim=-1)  # (N, D)
        cost = torch.expm1(1.0 - (flat @ qn.T).reshape(K, M, -1).transpose(1, 2))  # (K, N, M)
        low = cost.masked_fill(pad, float("inf")).amin(-1, keepdim=True)
        high = cost.masked_fill(pad, float("-inf")).amax(-1, keepdim=True)
        cost = (cost - low) / (high - low).clamp(min=1e-9)
        out[q] = metrics.subsequence_dtw(cost, lengths).cpu()
    return out


def znorm(scores: Tensor) -> Tensor:
    """Per-query normalization over documents: (Q, K) -> (Q, K) with zero mean, unit
    (population) std, as s3prl's; a query scoring every document alike stays 0."""
    return (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True,
                                                                unbiased=False).clamp(min=1e-9)


# The QUESST scorer's TWV weight of a false alarm: its score-TWV-Cnxe.sh sets P_target 0.0008,
# C_fa 1, C_miss 100, so beta = (C_fa / C_miss)(1 / P_target - 1) = 12.49 (read in the QUESST
# 2015 copy of the script, whose jar is MediaEvalQUESST2014's; NIST STD 2006's is 999.9)
QUESST_BETA = 12.49
DECISION_THRESHOLD = 2.0  # s3prl: a z-normed score above 2 (about the top 2.5 %) is a YES


def write_stdlist(path: Path, query_ids: list[str], doc_ids: list[str], scores: np.ndarray,
                  threshold: float = DECISION_THRESHOLD) -> None:
    """The (Q, K) detection scores as the QUESST 2014 scorer's ``stdlist`` XML, the file
    s3prl's QbE writes (``benchmark.stdlist.xml``): one ``detected_termlist`` per query, one
    ``term`` per document (whole-file detections: tbeg 0, dur 0), decision YES above
    ``threshold``. Written atomically."""
    root = ET.Element("stdlist", termlist_filename="benchmark.stdlist.xml", indexing_time="1.00",
                      language="english", index_size="1", system_id="benchmark")
    for q, qid in enumerate(query_ids):
        terms = ET.SubElement(root, "detected_termlist", termid=qid, term_search_time="1.0",
                              oov_term_count="1")
        for k, did in enumerate(doc_ids):
            ET.SubElement(terms, "term", file=did, channel="1", tbeg="0.000", dur="0.00",
                          score=f"{scores[q, k]:.4f}",
                          decision="YES" if scores[q, k] > threshold else "NO")
    ET.indent(root)
    atomic_write_text(path, '<?xml version="1.0" encoding="UTF-8"?>\n'
                      + ET.tostring(root, encoding="unicode") + "\n")


def read_stdlist(path: Path) -> dict[str, dict[str, tuple[float, bool]]]:
    """A stdlist XML -> {query id: {document: (score, decision is YES)}}."""
    out: dict[str, dict[str, tuple[float, bool]]] = {}
    for terms in ET.parse(path).getroot().iter("detected_termlist"):
        out[terms.get("termid")] = {t.get("file"): (float(t.get("score")),
                                                    t.get("decision") == "YES")
                                    for t in terms.iter("term")}
    return out


@register_task("qbe")
class QueryByExample(Task):
    """Spoken queries searched in spoken documents with the frozen features of one layer.

    A document is a hit for a query when the query's ``term`` is one of the words of the
    document's ``text``. The layer with the best dev MTWV is used on test (``layer`` fixes
    it). Score = z-normalized negative DTW distance. MTWV with the QUESST scorer's
    ``beta`` (:data:`QUESST_BETA`); the scores are also written as its stdlist XML.
    """

    metric = "mtwv"
    higher_is_better = True
    trainable = False
    subset = "qbe"

    def __init__(self, layer: int | None = None, beta: float = QUESST_BETA):
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
        """(Q, K) z-normed detection scores of one layer, its features normalized per
        dimension over the split's queries and documents (s3prl's QbE pipeline)."""
        mean, std = feature_normalizer([feats[i][layer] for i in (*queries, *docs)])
        dist = dtw_distances([(feats[q][layer].float() - mean) / std for q in queries],
                             [(feats[d][layer].float() - mean) / std for d in docs], self.device)
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
            write_stdlist(Path(out_dir) / f"qbe_{split}.stdlist.xml",
                          [items[q]["id"] for q in queries], [items[d]["id"] for d in docs],
                          scores)
        # x 100, as SUPERB reports them (the suite's reference points are in these units)
        return {"mtwv": 100 * metrics.mtwv(scores, labels, self.beta),
                "map": 100 * metrics.mean_average_precision(scores, labels),
                "layer": float(self.chosen)}
