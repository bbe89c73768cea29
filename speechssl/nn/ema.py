"""Exponential moving average teachers: Baevski et al., 2022, "data2vec: A General Framework
for Self-supervised Learning in Speech, Vision and Language" (section 3.2; also BYOL,
Grill et al., 2020).
"""

from __future__ import annotations

import torch
from torch import nn


def ema_decay(step: int, start: float, end: float, anneal_steps: int) -> float:
    """tau after ``step`` updates: linear from ``start`` to ``end`` over ``anneal_steps``
    updates, then constant at ``end``."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return end
    return start + (end - start) * step / anneal_steps


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: teacher <- decay * teacher + (1 - decay) * student, parameter by parameter
    (same architecture); floating buffers are copied from the student."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)
