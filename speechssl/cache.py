"""Frozen features: every layer of a frozen upstream, extracted once per split (fp16)
and reused by every probe step and epoch instead of re-running the upstream."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechssl.data.batching import AudioDataset, LengthBucketSampler, collate_audio
from speechssl.upstream.base import Upstream


@torch.inference_mode()
def extract_features(upstream: Upstream, items: list[dict], device: torch.device,
                     batch_seconds: float = 160.0, num_workers: int = 0,
                     progress: bool = True, desc: str = "features") -> list[Tensor]:
    """Run the frozen upstream over ``items``; returns one (L, T_i, D) fp16 CPU tensor
    per item, in item order. Batches are length-bucketed by total padded duration."""
    upstream.eval()
    sampler = LengthBucketSampler([it["duration"] for it in items], max_total=batch_seconds,
                                  shuffle=False)
    loader = DataLoader(AudioDataset(items, sample_rate=upstream.sample_rate),
                        batch_sampler=sampler, collate_fn=collate_audio,
                        num_workers=num_workers)
    feats: list[Tensor | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="utt", leave=False)
    for batch in loader:
        out = upstream(batch["audio"].to(device), batch["lengths"].to(device))
        stacked = torch.stack(out.hidden_states, dim=0).to("cpu", torch.float16)  # (L, B, T, D)
        for b, idx in enumerate(batch["index"].tolist()):
            feats[idx] = stacked[:, b, : int(out.lengths[b])].clone()
        bar.update(len(batch["items"]))
    bar.close()
    return feats  # type: ignore[return-value]


def collate_features(feats: list[Tensor], indices: list[int],
                     device: torch.device) -> tuple[Tensor, Tensor]:
    """Selected (L, T_i, D) features -> padded (L, B, T_max, D) float32 and (B,) lengths."""
    chosen = [feats[i] for i in indices]
    L, _, D = chosen[0].shape
    T = max(f.shape[1] for f in chosen)
    out = torch.zeros(L, len(chosen), T, D, dtype=torch.float32)
    for b, f in enumerate(chosen):
        out[:, b, : f.shape[1]] = f
    lengths = torch.tensor([f.shape[1] for f in chosen])
    return out.to(device), lengths.to(device)
