"""speechssl/convergence.py: a probe converged when early stopping ended it, or when its
last fifth of training did not beat the best before it by more than 0.5 % (relative)."""

from speechssl.convergence import converged, significant, still_improving


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


def test_decay_on_plateau_halves_the_rate_every_decay_patience_bad_evaluations():
    """train.decay_on_plateau: the rate of every parameter group times lr_decay at each
    decay_patience dev evaluations without improvement, never at the one that stops the run,
    and never with lr_decay 1.0 (the constant rate)."""
    import torch
    from omegaconf import OmegaConf

    from speechssl.train import decay_on_plateau

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 1e-2}, {"params": [], "lr": 1e-4}])
    oc = OmegaConf.create({"lr_decay": 0.5, "decay_patience": 2, "patience": 5})
    rates = []
    for bad_evals in range(1, 6):
        decay_on_plateau(opt, bad_evals, oc)
        rates.append([g["lr"] for g in opt.param_groups])
    assert rates == [[1e-2, 1e-4], [5e-3, 5e-5], [5e-3, 5e-5], [2.5e-3, 2.5e-5],
                     [2.5e-3, 2.5e-5]]
    constant = torch.optim.AdamW([p], lr=1e-3)
    for bad_evals in range(1, 5):
        decay_on_plateau(constant, bad_evals, OmegaConf.create(
            {"lr_decay": 1.0, "decay_patience": 1, "patience": 9}))
    assert constant.param_groups[0]["lr"] == 1e-3
    # the decayed rate is in the optimizer's state: a resumed run goes on at it
    restored = torch.optim.AdamW([{"params": [p], "lr": 1e-2}, {"params": [], "lr": 1e-4}])
    restored.load_state_dict(opt.state_dict())
    assert [g["lr"] for g in restored.param_groups] == [2.5e-3, 2.5e-5]


def test_significant_gains_are_beyond_half_a_percent():
    assert significant(95.0, None, True)  # the first evaluation
    assert significant(95.6, 95.0, True) and not significant(95.4, 95.0, True)  # 0.475 = 0.5 %
    assert not significant(23.1, 23.2, False) and not significant(23.0, 23.2, True)  # 0.1 < 0.116
    assert significant(22.0, 23.2, False)  # a WER 1.2 points lower
    assert significant(0.5, 0.0, True) and not significant(0.0, 0.0, True)
