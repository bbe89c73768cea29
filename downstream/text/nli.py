"""Sentence-pair classification (NLI): ``[CLS] premise [SEP] hypothesis [SEP]`` with segment
ids 0/1, the [CLS] state -> linear layer over entailment / neutral / contradiction
(Devlin et al., 2019, Fig. 4 a). On ``corpus=glue``: the pair tasks (MNLI, QNLI, RTE, WNLI,
MRPC, QQP, STS-B) with their GLUE metrics."""

from __future__ import annotations

from downstream.base import register_task
from downstream.text.cls import SentenceClassification
from downstream.text.common import where
from speechssl.errors import ManifestError


@register_task("nli")
class PairClassification(SentenceClassification):
    """Items carry ``text`` (premise / first sentence), ``text_pair`` and ``label``."""

    subset = "text-nli"

    def reference(self, item: dict):
        if not isinstance(item.get("text_pair"), str):
            raise ManifestError(f"{where(item)}: a sentence-pair item needs a 'text_pair' string")
        return super().reference(item)
