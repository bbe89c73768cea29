"""The downstream task interface and its registry."""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from speechssl.errors import ConfigError

_TASKS: dict[str, type[Task]] = {}


class Task:
    """A probe on frozen features: its data, its head, its loss, its metric.

    ``metric`` is the name of the headline metric in ``score``'s result and
    ``higher_is_better`` says which way model selection on dev goes.
    """

    name: str = ""
    modality: str = "audio"
    metric: str = ""
    higher_is_better: bool = True

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


def register_task(name: str):
    def wrap(cls: type[Task]) -> type[Task]:
        _TASKS[name] = cls
        cls.name = name
        return cls

    return wrap


def registered_tasks() -> list[str]:
    import downstream  # noqa: F401

    return sorted(_TASKS)


def build_task(name: str, **kwargs) -> Task:
    """Instantiate a registered task; unknown options are a ConfigError listing valid ones."""
    registered_tasks()
    if name not in _TASKS:
        raise ConfigError(f"unknown downstream {name!r}; registered tasks: {', '.join(sorted(_TASKS))}")
    cls = _TASKS[name]
    params = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"downstream {name!r} has no option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(params) or '(none)'}")
    return cls(**kwargs)


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over valid frames: (B, T, D), (B,) -> (B, D)."""
    import torch

    mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).unsqueeze(-1)
    return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
