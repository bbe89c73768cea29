"""The example plug-in's own test: shapes, frame rate, and a pre-training loss that falls.
Run: pytest examples/my_upstream (then speechssl's contract: see docs/plug-in.md)."""

from __future__ import annotations

import torch
from my_upstream import TinyConv


def test_shapes_and_frames():
    up = TinyConv(hidden_size=16).eval()
    wavs = torch.randn(2, 8000) * 0.1
    out = up(wavs, torch.tensor([8000, 4000]))
    assert len(out.hidden_states) == 3
    assert all(h.shape == (2, 48, 16) for h in out.hidden_states)
    assert out.lengths.tolist() == [48, 23]  # 1 + (samples - 400) // 160


def test_pretrain_loss_falls():
    torch.manual_seed(0)
    up = TinyConv(hidden_size=16, mask_prob=0.3)
    wavs = torch.randn(4, 6000) * 0.1
    lengths = torch.tensor([6000, 5000, 4000, 3000])
    opt = torch.optim.Adam(up.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = up.pretrain_loss(wavs, lengths)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
