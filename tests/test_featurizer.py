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


def test_standardize_with_train_statistics_and_zero_padding():
    from speechssl.featurizer import layer_statistics

    torch.manual_seed(0)
    layers = torch.randn(2, 3, 6, 4) * torch.tensor([1.0, 10.0, 0.1, 3.0]) + 5.0
    lengths = torch.tensor([6, 4, 2])
    f = Featurizer(2, 4, standardize=True, layer=0)
    assert torch.equal(f(layers), layers[0])  # identity until statistics are set

    class Source:  # the layer-source interface of speechssl.features, one batch
        def batches(self, index_batches):
            for idx in index_batches:
                yield idx, idx

        def __call__(self, idx):
            return layers, lengths

    mean, std, cov = layer_statistics(Source(), [[0, 1, 2]])
    assert cov is None  # only asked for by whitening
    valid = torch.cat([layers[:, b, : int(n)] for b, n in enumerate(lengths)], dim=1)  # (L, N, D)
    assert torch.allclose(mean, valid.mean(1), atol=1e-5)
    assert torch.allclose(std, valid.std(1, unbiased=False), atol=1e-5)
    f.set_statistics(mean, std)
    out = f(layers, lengths)
    z = torch.cat([out[b, : int(n)] for b, n in enumerate(lengths)])
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(4), atol=1e-3)
    assert out[1, 4:].abs().max() == 0 and out[2, 2:].abs().max() == 0  # padding stays zero
    # the statistics travel with the weights
    g = Featurizer(2, 4, standardize=True, layer=0)
    g.load_state_dict(f.state_dict())
    assert torch.equal(g(layers, lengths), out)
    with pytest.raises(ValueError, match="needs the feature size"):
        Featurizer(2, standardize=True)


def test_whiten_decorrelates_and_speeds_up_gradient_descent():
    """ZCA whitening of the standardised features: identity covariance for correlated but
    well-conditioned features, and on near-collinear ones (the label along a weak
    direction) a full-batch Adam probe at its optimum in 300 steps, where without whitening
    it is still far from it (it needs about 3000)."""
    from speechssl.featurizer import layer_statistics

    torch.manual_seed(0)
    n, d = 400, 6
    base, noise = torch.randn(n, 2), torch.randn(n, d)
    x = base @ torch.randn(2, d) + 0.03 * noise  # six dimensions, two strong directions
    y = (noise[:, 0] + 0.5 * torch.randn(n) > 0).long()
    layers = x[None, :, None, :]  # (L=1, B=n, T=1, D): pooled units
    lengths = torch.ones(n, dtype=torch.long)

    class Source:
        def batches(self, index_batches):
            for idx in index_batches:
                yield idx, idx

        def __call__(self, idx):
            return layers[:, idx], lengths[idx]

    mean, std, cov = layer_statistics(Source(), [list(range(0, 200)), list(range(200, n))],
                                      covariance=True)
    assert torch.allclose(cov[0], torch.cov(x.T, correction=0), atol=1e-5)

    def featurizer(whiten, stats):
        f = Featurizer(1, d, standardize=True, whiten=whiten)
        f.set_statistics(*stats)
        return f

    full = torch.randn(n, d) @ (torch.eye(d) + 0.5)  # equicorrelated: condition number 16
    check = featurizer(True, (full.mean(0)[None], full.std(0, unbiased=False)[None],
                              torch.cov(full.T, correction=0)[None]))
    z = check(full[None, :, None, :], lengths)[:, 0]
    assert torch.allclose(torch.cov(z.T, correction=0), torch.eye(d), atol=0.06)

    def final_loss(f, steps):
        torch.manual_seed(0)
        head = torch.nn.Linear(d, 2)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        feats = f(layers, lengths)[:, 0].detach()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(head(feats), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    white, plain = featurizer(True, (mean, std, cov)), featurizer(False, (mean, std))
    optimum = final_loss(white, 2000)
    assert final_loss(white, 300) < optimum + 1e-3
    assert final_loss(plain, 300) > optimum + 0.05
    g = Featurizer(1, d, standardize=True, whiten=True)  # the whitener travels with the weights
    g.load_state_dict(white.state_dict())
    assert torch.equal(g(layers, lengths), white(layers, lengths))
    with pytest.raises(ConfigError, match="needs standardize=true"):
        Featurizer(1, d, whiten=True)
