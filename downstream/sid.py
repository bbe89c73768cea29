"""SID: speaker identification (VoxCeleb1 closed set), mean-pool + linear over speakers,
accuracy (SUPERB, Yang et al. 2021)."""

from __future__ import annotations

from downstream.base import register_task
from downstream.utterance import UtteranceClassification


@register_task("sid")
class SpeakerIdentification(UtteranceClassification):
    """Closed-set: every dev/test speaker also speaks in the training split."""

    subset = "sid"
    label_field = "speaker"
