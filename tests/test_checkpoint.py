"""Checkpoints: safetensors round trip, and a weights hash that depends on the weights only."""

import torch
from torch import nn

from speechssl.checkpoint import load_weights, save_weights, state_hash


def test_hash_follows_weights_not_files(tmp_path):
    torch.manual_seed(0)
    a = nn.Linear(4, 3)
    save_weights(tmp_path / "a.safetensors", a, {"x": "1", "y": "2"})
    save_weights(tmp_path / "b.safetensors", a, {"y": "2", "z": "3"})  # other metadata
    b, c = nn.Linear(4, 3), nn.Linear(4, 3)
    load_weights(tmp_path / "a.safetensors", b)
    load_weights(tmp_path / "b.safetensors", c)
    assert state_hash(a) == state_hash(b) == state_hash(c)
    with torch.no_grad():
        c.weight[0, 0] += 1e-6
    assert state_hash(c) != state_hash(a)
