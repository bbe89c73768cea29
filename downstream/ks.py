"""KS: keyword spotting (Speech Commands v1, 12 classes), mean-pool + linear, accuracy."""

from __future__ import annotations

from downstream.base import register_task
from downstream.utterance import UtteranceClassification


@register_task("ks")
class KeywordSpotting(UtteranceClassification):
    subset = "ks"
    label_field = "label"

    def splits(self, corpus) -> dict[str, list[dict]]:
        """The corpus's splits; on Speech Commands without ``corpus.test_root`` it says that
        the test set is ``testing_list.txt``, not the separate test set SUPERB scores."""
        if corpus.meta.get("test_source") == "testing_list.txt":
            print("[ks] test set: Speech Commands v0.01's testing_list.txt (no _silence_ "
                  "clips), not the separate speech_commands_test_set_v0.01 that SUPERB scores: "
                  "accuracies do not compare with SUPERB's; set corpus.test_root to it")
        return super().splits(corpus)
