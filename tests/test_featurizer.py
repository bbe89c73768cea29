"""The SUPERB featurizer: zero-init softmax weights, layer choice, layer norm."""

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.featurizer import Featurizer


def test_starts_as_layer_average_and_learns():
    layers = torch.randn(4, 2, 5, 3)
    f = Featurizer(4)
    assert torch.allclose(f(layers), layers.mean(0), atol=1e-6)
    assert f.layer_weights() == pytest.approx([0.25] * 4)
    # the weights are trainable: push towards layer 2
    opt = torch.optim.SGD(f.parameters(), lr=1.0)
    for _ in range(50):
        loss = (f(layers) - layers[2]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert max(range(4), key=lambda i: f.layer_weights()[i]) == 2


def test_fixed_layer_and_layer_norm():
    layers = torch.randn(3, 2, 5, 4) * 10 + 3
    assert torch.equal(Featurizer(3, layer=-1)(layers), layers[-1])
    assert Featurizer(3, layer=1).layer_weights() == [0.0, 1.0, 0.0]
    normed = Featurizer(3, layer_norm=True, layer=0)(layers)
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 5), atol=1e-5)
    with pytest.raises(ConfigError, match=r"layer=3: the upstream has 3 layers; must be in \[-3, 2\]"):
        Featurizer(3, layer=3)
    with pytest.raises(ValueError, match="expected 3 layers"):
        Featurizer(3)(torch.randn(2, 1, 1, 1))
