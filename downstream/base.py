"""The downstream task interface and the task registry (name -> class)."""

from __future__ import annotations

import inspect
from pathlib import Path

from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.views import random_windows  # noqa: F401 (SD's chunks, the crops below)
from speechssl.registry import Registry

# the built-ins register themselves in their modules under downstream/ (text tasks included)
TASKS = Registry("downstream", packages=("downstream",))
# downstream config keys that are not task options
TASK_RESERVED = ("name", "optim", "featurizer", "train_items")


class Task:
    """A probe on frozen features: its data, its head, its loss, its metric.

    ``metric`` is the name of the headline metric in ``score``'s result and
    ``higher_is_better`` says which way model selection on dev goes.
    """

    name: str = ""
    modality: str = "audio"
    metric: str = ""
    higher_is_better: bool = True
    trainable: bool = True  # False: no probe is trained; the frozen features are scored (QbE)
    selects_on_dev: bool = True  # False: no dev metric (ASV without dev speakers): no lr search
    # True: the probe reads only the mean of its input over valid frames (mean-pool + linear),
    # so the loop may feed it each item's mean vector as a one-frame sequence, pooled once per
    # layer and cached (speechssl.features.mean_pooled): the mean commutes with the
    # featurizer's weighted sum. Tasks whose probe sees frames (or another pooling) leave it.
    pooled_input: bool = False
    frame_shift: float = 0.01  # seconds per upstream frame; the loop sets it (SD labels)
    device: str = "cpu"  # where scoring may compute (QbE's DTW); the loop sets it

    def splits(self, corpus) -> dict[str, list[dict]]:
        """{"train": items, "dev": items, "test": items} from the corpus manifests."""
        raise NotImplementedError

    def setup(self, train_items: list[dict]) -> None:
        """Build label vocabularies from the training items (called before build_probe)."""

    def build_probe(self, feature_dim: int) -> nn.Module:
        raise NotImplementedError

    def loss(self, probe: nn.Module, features: Tensor, lengths: Tensor, batch: dict) -> Tensor:
        raise NotImplementedError

    def predict(self, probe: nn.Module, features: Tensor, lengths: Tensor, batch: dict) -> list:
        raise NotImplementedError

    def reference(self, item: dict):
        """The ground truth of one item, in the form ``predict`` returns."""
        raise NotImplementedError

    def score(self, predictions: list, references: list) -> dict[str, float]:
        raise NotImplementedError

    def evaluate_split(self, split: str, predictions: list, items: list[dict],
                       out_dir: Path | None = None) -> dict[str, float]:
        """Score one split from its per-item predictions, in item order.

        The default compares ``predictions`` with ``reference(item)`` through ``score``.
        Tasks override it when their metric is not per item (ASV scores trials of
        embeddings), when they tune post-processing on dev and apply it to test (SD), or
        when they write output files: ``out_dir`` (the run directory) is given on the final
        test pass only. For a task with ``trainable = False`` each prediction is the
        item's frozen (L, T, D) features.
        """
        return self.score(predictions, [self.reference(it) for it in items])

    def layer_weights(self, num_layers: int) -> list[float]:
        """For a task with ``trainable = False``: the weight each upstream layer had in the
        scores, for the leaderboard (QbE: one-hot on the layer chosen on dev)."""
        return [1.0 / num_layers] * num_layers


def register_task(name: str):
    """Class decorator: make ``name`` usable as ``downstream=name``."""
    return TASKS.register(name)


def registered_tasks() -> list[str]:
    return sorted(TASKS.names())


def build_task(name: str, **kwargs) -> Task:
    """Instantiate a registered task; unknown options are a ConfigError listing valid ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown downstream {name!r}; registered tasks: "
                          f"{', '.join(registered_tasks())}")
    cls = TASKS.get(name)
    params = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"downstream {name!r} has no option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(params) or '(none)'}")
    return cls(**kwargs)


def task_from_config(cfg_down) -> Task:
    """The task of ``cfg.downstream``: its name and options (not optim, featurizer,
    train_items)."""
    from omegaconf import OmegaConf

    opts = {k: v for k, v in OmegaConf.to_container(cfg_down, resolve=True).items()
            if k not in TASK_RESERVED}
    return build_task(cfg_down.name, **opts)


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over valid frames: (B, T, D), (B,) -> (B, D)."""
    from speechssl.nn.masking import valid_mask

    mask = valid_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
    return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)


def check_crop_seconds(value) -> float | None:
    """``downstream.train_crop_seconds``: null (whole utterances) or a number of seconds > 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or value <= 0):
        raise ConfigError(f"downstream.train_crop_seconds must be a number > 0 or null "
                          f"(whole utterances), got {value!r}")
    return value


def random_crops(features: Tensor, lengths: Tensor, seconds: float,
                 frame_shift: float) -> tuple[Tensor, Tensor]:
    """A random window of ``seconds`` of each utterance's frames (s3prl's ``max_timestep``
    training crops: SID and ASV, 8 s): (B, T, D) -> (B, min(T, size), D) and the lengths."""
    size = max(1, round(seconds / frame_shift))
    features, _, lengths = random_windows(features, features[..., :0], lengths, size)
    return features, lengths
