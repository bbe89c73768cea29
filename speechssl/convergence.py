"""Did a probe converge? A score is only the representation's score if its probe stopped
improving: every row records the answer (``converged``) and the leaderboard marks the cells
whose probe was still improving.

A run converged when early stopping ended it (its dev metric gained no more than 0.5 %
(relative) for ``patience`` evaluations: :func:`significant`), or when the best value of its
last fifth of training is no better than the best before that by more than 0.5 %. A task
with no dev metric (ASV with ``dev_speakers=0``) is judged on its training loss instead, the
same way."""

from __future__ import annotations

LAST_FRACTION = 0.2   # "the last fifth of training"
RELATIVE_TOL = 0.005  # an improvement smaller than this (relative) is no improvement


def significant(value: float, reference: float | None, higher_is_better: bool) -> bool:
    """Does ``value`` beat ``reference`` by more than ``RELATIVE_TOL`` (relative)? Early
    stopping counts only such gains as progress (Keras's ``min_delta``, here relative), so a
    dev metric that creeps up by noise-sized steps does not keep a run going; the best weights
    are still kept at every gain. True when there is no reference yet."""
    if reference is None:
        return True
    gain = value - reference if higher_is_better else reference - value
    return gain > RELATIVE_TOL * abs(reference)


def still_improving(history: list[list[float]], higher_is_better: bool) -> bool | None:
    """``history``: [step, value] at each evaluation, in step order. True when the best value
    after ``(1 - LAST_FRACTION)`` of the last step beats the best before it by more than
    ``RELATIVE_TOL``; None when there are too few evaluations to tell (none on one side)."""
    if not history:
        return None
    cut = (1.0 - LAST_FRACTION) * history[-1][0]
    early = [v for step, v in history if step <= cut]
    late = [v for step, v in history if step > cut]
    if not early or not late:
        return None
    best = max if higher_is_better else min
    return significant(best(late), best(early), higher_is_better)


def converged(history: list[list[float]], higher_is_better: bool, stopped_early: bool) -> bool:
    """Early stopping, or no improvement in the last fifth (:func:`still_improving`); too
    few evaluations to tell counts as not converged."""
    if stopped_early:
        return True
    return still_improving(history, higher_is_better) is False
