"""Random generators for the draws inside a model's loss (masks, negatives, alterations)."""

from __future__ import annotations

import torch


def generator_from_global() -> torch.Generator:
    """A fresh CPU generator seeded by one draw from the global RNG, so that a loss's random
    draws follow ``torch.manual_seed`` and resume with the saved global RNG state, while
    advancing the global stream by that one draw only (and giving the same draws on CPU and
    GPU)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
