"""PR: phoneme recognition, a linear CTC head over phones, PER (SUPERB)."""

from __future__ import annotations

from torch import Tensor, nn

from downstream.base import register_task
from downstream.ctc import CTCTask
from speechssl import metrics
from speechssl.errors import ManifestError


class LinearCTC(nn.Module):
    """(B, T, D) -> logits (B, T, V), lengths unchanged."""

    def __init__(self, feature_dim: int, vocab_size: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.linear(x), lengths


@register_task("pr")
class PhonemeRecognition(CTCTask):
    metric = "per"
    higher_is_better = False

    def __init__(self):
        pass

    def splits(self, corpus) -> dict[str, list[dict]]:
        # a corpus without phonemes (LibriSpeech with no lexicon) says what to set
        return {s: corpus.items(self.subset, s, fields=("phonemes",))
                for s in ("train", "dev", "test")}

    def tokens(self, item: dict) -> list[str]:
        if "phonemes" not in item:
            raise ManifestError(f"{item.get('_manifest')}:{item.get('_line')}: no 'phonemes' field")
        return item["phonemes"].split()

    def join(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def build_probe(self, feature_dim: int) -> nn.Module:
        return LinearCTC(feature_dim, len(self.vocab))

    def score(self, predictions, references) -> dict[str, float]:
        return {"per": metrics.per(references, predictions)}
