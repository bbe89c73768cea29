"""ER: emotion recognition (IEMOCAP, four classes, leave-one-session-out folds),
mean-pool + linear, accuracy (SUPERB, Yang et al. 2021)."""

from __future__ import annotations

from downstream.base import register_task
from downstream.utterance import UtteranceClassification
from speechssl.errors import ConfigError

NUM_FOLDS = 5


def er_subset(fold: int | None) -> str:
    """Manifest subset of a fold: None -> "er" (synthesized corpus), 1..5 -> "er-fold{N}"
    (IEMOCAP, session N held out as test)."""
    if fold is None:
        return "er"
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= NUM_FOLDS:
        raise ConfigError(f"downstream.fold must be null or an integer 1..{NUM_FOLDS}, "
                          f"got {fold!r}")
    return f"er-fold{fold}"


@register_task("er")
class EmotionRecognition(UtteranceClassification):
    """neutral / happy / sad / angry from the ``emotion`` field."""

    label_field = "emotion"

    def __init__(self, fold: int | None = None, projector_dim: int | None = None):
        super().__init__(projector_dim)
        self.fold = fold
        self.subset = er_subset(fold)
