"""Frozen features: every layer of a frozen upstream, extracted once per split (fp16)
and reused by every probe step and epoch instead of re-running the upstream."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechssl.data.batching import AudioDataset, LengthBucketSampler, collate_audio
from speechssl.errors import ConfigError
from speechssl.upstream.base import Upstream


def split_features(upstream: Upstream, items: list[dict], device: torch.device, *,
                   key: dict, cfg, layers: list[int] | None = None, progress: bool = True,
                   desc: str = "features") -> Sequence[Tensor] | None:
    """The frozen features of one split, indexed like ``items``: one (L, T_i, D) fp16 tensor
    per item (only ``layers`` when given), or None when the split runs on the fly
    (``cache=false``, or its features exceed ``cache_budget_gb``).

    ``key`` names what the features depend on (upstream weights hash, upstream config,
    corpus, split); ``cfg`` is the run's root config (``cache``, ``cache_dir``,
    ``cache_budget_gb``, ``num_workers``, ``downstream.optim.extract_batch_seconds``).
    """
    if not cfg.get("cache", True):
        return None
    feats = extract_features(upstream, items, device,
                             batch_seconds=cfg.downstream.optim.extract_batch_seconds,
                             num_workers=cfg.num_workers, progress=progress, desc=desc)
    if layers is not None:
        feats = [f[layers] for f in feats]
    return feats


@torch.inference_mode()
def extract_features(upstream: Upstream, items: list[dict], device: torch.device,
                     batch_seconds: float = 160.0, num_workers: int = 0,
                     progress: bool = True, desc: str = "features") -> list[Tensor]:
    """Run the frozen upstream over ``items``; returns one (L, T_i, D) fp16 CPU tensor
    per item, in item order. Batches are length-bucketed by total padded duration (text
    upstreams: see :func:`extract_text_features`)."""
    check_modality(upstream, items)
    if getattr(upstream, "modality", "audio") == "text":
        return extract_text_features(upstream, items, device, max_tokens=int(batch_seconds * 100),
                                     progress=progress, desc=desc)
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


def check_modality(upstream: Upstream, items: list[dict]) -> None:
    """ConfigError when text items meet an audio upstream or audio items a text upstream."""
    if not items:
        return
    modality = getattr(upstream, "modality", "audio")
    item_is_text = "path" not in items[0] and ("text" in items[0] or "words" in items[0])
    if item_is_text != (modality == "text"):
        kind = "text" if item_is_text else "audio"
        raise ConfigError(f"upstream {getattr(upstream, 'name', type(upstream).__name__)!r} "
                          f"reads {modality} but the task's items are {kind} "
                          f"({items[0].get('_manifest', 'items')}): pair text tasks with a text "
                          f"upstream (bert, gpt, hf text models) and speech tasks with an audio one")


@torch.inference_mode()
def extract_text_features(upstream: Upstream, items: list[dict], device: torch.device,
                          max_tokens: int = 16000, progress: bool = True,
                          desc: str = "features") -> list[Tensor]:
    """Text: tokenize each item with the upstream's own tokenizer, run padded batches of at
    most ``max_tokens`` padded tokens (``extract_batch_seconds`` x 100, one token standing
    for one 10 ms frame); returns one (L, T_i, D) fp16 tensor per item (T_i tokens).

    Each item gets ``item["_tokens"]``: the Encoded (ids, word_ids, offsets, sequence_ids)
    that the text tasks use to map tokens back to words, labels and answer spans.
    """
    from speechssl.text.data import pad_ids

    upstream.eval()
    encoded = [upstream.encode(it) for it in items]
    for it, enc in zip(items, encoded, strict=True):
        it["_tokens"] = enc
    sampler = LengthBucketSampler([len(e.ids) for e in encoded], max_total=max_tokens,
                                  shuffle=False)
    feats: list[Tensor | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="text", leave=False)
    for idx in sampler:
        ids, lengths = pad_ids([torch.tensor(encoded[i].ids) for i in idx], upstream.pad_id)
        out = upstream(ids.to(device), lengths.to(device))
        stacked = torch.stack(out.hidden_states, dim=0).to("cpu", torch.float16)  # (L, B, T, D)
        for b, i in enumerate(idx):
            feats[i] = stacked[:, b, : int(out.lengths[b])].clone()
        bar.update(len(idx))
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
