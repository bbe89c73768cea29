"""KS: keyword spotting (Speech Commands v1, 12 classes), mean-pool + linear, accuracy."""

from __future__ import annotations

from downstream.base import register_task
from downstream.utterance import UtteranceClassification


@register_task("ks")
class KeywordSpotting(UtteranceClassification):
    subset = "ks"
    label_field = "label"
