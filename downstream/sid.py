"""SID: speaker identification (VoxCeleb1 closed set), mean-pool + linear over speakers,
accuracy (SUPERB, Yang et al. 2021)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from downstream.base import check_crop_seconds, random_crops, register_task
from downstream.utterance import UtteranceClassification


@register_task("sid")
class SpeakerIdentification(UtteranceClassification):
    """Closed-set: every dev/test speaker also speaks in the training split.

    ``train_crop_seconds``: train on a random window of that many seconds of each utterance
    (s3prl: 8 s, ``max_timestep`` 128000 samples); the probe then trains on frames instead
    of each item's pooled vector. null (the CPU default) = whole utterances."""

    subset = "sid"
    label_field = "speaker"

    def __init__(self, projector_dim: int | None = None, train_crop_seconds: float | None = None):
        super().__init__(projector_dim)
        self.train_crop_seconds = check_crop_seconds(train_crop_seconds)
        self.pooled_input = train_crop_seconds is None  # a crop needs the frames

    def loss(self, probe, features, lengths, batch) -> Tensor:
        if probe.training and self.train_crop_seconds is not None:
            features, lengths = random_crops(features, lengths, self.train_crop_seconds,
                                             self.frame_shift)
        return F.cross_entropy(probe(features, lengths), self.targets(batch, features.device))
