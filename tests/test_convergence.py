"""speechssl/convergence.py: a probe converged when early stopping ended it, or when its
last fifth of training did not beat the best before it by more than 0.5 % (relative)."""

from speechssl.convergence import converged, still_improving


def test_still_improving_over_the_last_fifth():
    rising = [[s, 10.0 + s / 100] for s in range(100, 1001, 100)]  # accuracy still climbing
    flat = [[s, 50.0] for s in range(100, 1001, 100)]
    flat[-1][1] = 50.1  # +0.2 % relative: noise, not progress
    assert still_improving(rising, higher_is_better=True) is True
    assert still_improving(flat, higher_is_better=True) is False
    falling_wer = [[s, 60.0 - s / 50] for s in range(100, 1001, 100)]
    assert still_improving(falling_wer, higher_is_better=False) is True
    assert still_improving(falling_wer, higher_is_better=True) is False  # the other way round
    assert still_improving([[200, 5.0]], True) is None  # one evaluation: cannot tell
    assert still_improving([], True) is None


def test_converged():
    rising = [[s, float(s)] for s in range(100, 1001, 100)]
    assert converged(rising, True, stopped_early=False) is False
    assert converged(rising, True, stopped_early=True) is True  # patience ran out
    assert converged([[1000, 3.0]], True, stopped_early=False) is False  # too few to tell
    peaked = [[100, 1.0], [200, 2.0], [300, 2.0], [400, 1.9], [500, 1.8]]
    assert converged(peaked, True, stopped_early=False) is True
