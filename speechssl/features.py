"""Where the layers of a batch come from. Items -> batches (a DataLoader: audio read by
its workers, or token ids) -> the upstream -> stacked layers (L, B, T, D).

One path for every user of an upstream's features: the cache's extraction
(:func:`extract`, stored by speechssl/cache.py), probes that run the upstream on every
batch (:class:`LiveLayers`: ``cache=false``, a split over the cache budget, or a tuned
upstream), and pre-training's data (:func:`input_dataset`, :func:`model_inputs`).
:class:`CachedLayers` serves the same stacked layers read back from the cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from speechssl.data.batching import AudioDataset, LengthBucketSampler, collate_audio
from speechssl.errors import ConfigError
from speechssl.upstream.base import Upstream, UpstreamOutput

# ---------------------------------------------------------------- inputs: audio or text


def is_text(upstream: Upstream) -> bool:
    return getattr(upstream, "modality", "audio") == "text"


def check_modality(upstream: Upstream, items: list[dict]) -> None:
    """ConfigError when text items meet an audio upstream or audio items a text upstream."""
    if not items:
        return
    item_is_text = "path" not in items[0] and ("text" in items[0] or "words" in items[0])
    if item_is_text != is_text(upstream):
        modality = "text" if is_text(upstream) else "audio"
        kind = "text" if item_is_text else "audio"
        raise ConfigError(f"upstream {getattr(upstream, 'name', type(upstream).__name__)!r} "
                          f"reads {modality} but the task's items are {kind} "
                          f"({items[0].get('_manifest', 'items')}): pair text tasks with a text "
                          f"upstream (bert, gpt, hf text models) and speech tasks with an audio one")


def encode_items(upstream: Upstream, items: list[dict]) -> list:
    """Tokenize text items with the upstream's tokenizer; sets ``item["_tokens"]`` (the
    Encoded ids, word ids, offsets and sequence ids that the text tasks map back to words,
    labels and answer spans)."""
    encoded = [upstream.encode(it) for it in items]
    for it, enc in zip(items, encoded, strict=True):
        it["_tokens"] = enc
    return encoded


def _encoded_ids(item: dict) -> list[int]:
    return item["_tokens"].ids


def _collate_text(upstream: Upstream, batch: list[dict]) -> dict:
    from speechssl.text.data import collate_text

    return collate_text(batch, upstream.pad_id)


def input_dataset(upstream: Upstream, items: list[dict],
                  encode=None) -> tuple[Dataset, callable]:
    """(dataset, collate) of the upstream's inputs for ``items``: audio at its sample rate,
    or token ids from ``encode(item)`` (default: the ``item["_tokens"]`` that
    :func:`encode_items` set). A collated batch holds ``index`` and ``items``, and the
    inputs :func:`model_inputs` takes."""
    if is_text(upstream):
        from speechssl.text.data import TextDataset

        # pad_id looked up per batch: a text upstream trains its tokenizer in ``prepare``
        return TextDataset(items, encode or _encoded_ids), partial(_collate_text, upstream)
    return AudioDataset(items, sample_rate=upstream.sample_rate), collate_audio


def model_inputs(batch: dict, device: torch.device,
                 non_blocking: bool = False) -> tuple[Tensor, Tensor]:
    """(inputs, lengths) of a collated batch on ``device``: waveforms (B, S) or token ids
    (B, T), and (B,) lengths."""
    x = batch["tokens"] if "tokens" in batch else batch["audio"]
    return (x.to(device, non_blocking=non_blocking),
            batch["lengths"].to(device, non_blocking=non_blocking))


def loader(dataset: Dataset, collate, index_batches: list[list[int]], num_workers: int = 0,
           device: torch.device | None = None) -> DataLoader:
    """A DataLoader over fixed batches of item indices (read by ``num_workers`` workers,
    pinned for CUDA). It has its own generator: making an iterator draws nothing from the
    global RNG, so a resumed run sees the same dropout masks as an uninterrupted one."""
    return DataLoader(dataset, batch_sampler=index_batches, collate_fn=collate,
                      num_workers=num_workers, generator=torch.Generator(),
                      pin_memory=device is not None and device.type == "cuda")


def stack_layers(out: UpstreamOutput, dtype: torch.dtype | None = None) -> Tensor:
    """UpstreamOutput -> (L, B, T, D), each layer cast to ``dtype`` first (on its device)."""
    return torch.stack([h if dtype is None else h.to(dtype) for h in out.hidden_states], dim=0)


# ---------------------------------------------------------------- extraction


def estimate_frames(upstream: Upstream, items: list[dict]) -> float:
    """Frames the items will have: tokens (text, after :func:`encode_items`), or duration x
    sample_rate / downsample_rate."""
    if is_text(upstream):
        return float(sum(len(it["_tokens"].ids) for it in items))
    seconds = sum(float(it.get("duration", 0.0)) for it in items)
    return seconds * upstream.sample_rate / upstream.downsample_rate


def extraction_batches(upstream: Upstream, items: list[dict], todo: list[int],
                       batch_seconds: float) -> list[list[int]]:
    """``items[todo]`` in length-bucketed batches, shortest first: at most ``batch_seconds``
    of padded audio, or ``batch_seconds`` x 100 padded tokens (a token for a 10 ms frame)."""
    if is_text(upstream):
        sizes, budget = [len(items[i]["_tokens"].ids) for i in todo], int(batch_seconds * 100)
    else:
        sizes, budget = [float(items[i]["duration"]) for i in todo], batch_seconds
    return [[todo[j] for j in local]
            for local in LengthBucketSampler(sizes, max_total=budget, shuffle=False)]


def extract(upstream: Upstream, items: list[dict], todo: list[int], device: torch.device,
            batch_seconds: float, num_workers: int = 0
            ) -> Iterator[tuple[list[int], Tensor, list[int]]]:
    """Run the frozen upstream over ``items[todo]`` (text items after
    :func:`encode_items`) under torch.inference_mode; yields (item indices (B,), hidden
    states (L, B, T, D) fp16 on the CPU, valid frames (B,))."""
    if not todo:
        return
    upstream.eval()
    dataset, collate = input_dataset(upstream, items)
    batches = extraction_batches(upstream, items, todo, batch_seconds)
    pin = device.type == "cuda"
    for batch in loader(dataset, collate, batches, num_workers, device):
        with torch.inference_mode():
            out = upstream(*model_inputs(batch, device, non_blocking=pin))
            stacked = stack_layers(out, torch.float16).cpu()  # cast on the device: half the copy
        yield batch["index"].tolist(), stacked, out.lengths.tolist()


def extract_features(upstream: Upstream, items: list[dict], device: torch.device,
                     batch_seconds: float = 160.0, num_workers: int = 0,
                     progress: bool = True, desc: str = "features") -> list[Tensor]:
    """Run the frozen upstream over ``items`` in memory (no cache); returns one (L, T_i, D)
    fp16 CPU tensor per item, in item order. Text items are tokenized first
    (:func:`encode_items`)."""
    check_modality(upstream, items)
    if is_text(upstream):
        encode_items(upstream, items)
    feats: list[Tensor | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="utt", leave=False)
    for idx, stacked, lengths in extract(upstream, items, list(range(len(items))), device,
                                         batch_seconds, num_workers):
        for b, (i, n) in enumerate(zip(idx, lengths, strict=True)):
            feats[i] = stacked[:, b, :n].clone()
        bar.update(len(idx))
    bar.close()
    return feats


def cached_features(upstream: Upstream, items: list[dict], device: torch.device, *, key: dict,
                    root, budget_gb: float, batch_seconds: float, num_workers: int = 0,
                    layers: list[int] | None = None, progress: bool = True,
                    desc: str = "features") -> Sequence[Tensor] | None:
    """The frozen features of one split from the cache in ``root`` (extracted on first use,
    speechssl/cache.py), indexed like ``items``; None when the split exceeds ``budget_gb``.
    Text items get ``item["_tokens"]`` in every case."""
    from speechssl import cache

    check_modality(upstream, items)
    if is_text(upstream):
        encode_items(upstream, items)
    if not items:
        return []
    return cache.split_features(
        root, key, items, text=is_text(upstream), frames=estimate_frames(upstream, items),
        extract=lambda todo: extract(upstream, items, todo, device, batch_seconds, num_workers),
        budget_gb=budget_gb, layers=layers, progress=progress, desc=desc)


# ---------------------------------------------------------------- layer sources of a probe


def collate_features(feats: Sequence[Tensor], indices: list[int],
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


class CachedLayers(nn.Module):
    """The layers of a batch read from frozen features: one (L, T_i, D) tensor per item.
    ``sizes``: frames per item, the unit of ``batch_frames``."""

    def __init__(self, feats: Sequence[Tensor], device: torch.device):
        super().__init__()
        self.feats, self.device = feats, device
        lengths = getattr(feats, "lengths", None)  # a disk cache knows them without reading
        self.sizes = list(lengths) if lengths is not None else [f.shape[1] for f in feats]

    def dims(self) -> tuple[int, int]:
        """(number of layers L, feature size D)."""
        L, _, D = self.feats[0].shape
        return L, D

    def batches(self, index_batches: list[list[int]]) -> Iterator[tuple[list[int], list[int]]]:
        """(item indices, what ``forward`` takes) of each batch: the indices themselves."""
        for idx in index_batches:
            yield idx, idx

    def forward(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        """Item indices (B,) -> layers (L, B, T, D) float32, lengths (B,)."""
        return collate_features(self.feats, idx, self.device)


class LiveLayers(nn.Module):
    """The layers of a batch computed by the upstream on the spot, from inputs read by a
    DataLoader (``num_workers`` workers). Frozen: eval mode, no gradients, rounded to fp16
    as the cache stores them (cache=false changes memory and time, not results). Tuned
    (``trainable``): gradients flow, and ``train()`` puts the upstream in train mode
    (speechssl.tuning.set_train_mode).

    ``sizes`` per item: tokens (text; each item gets ``item["_tokens"]``, as in feature
    extraction) or frames estimated from the duration (audio), the unit of ``batch_frames``."""

    def __init__(self, upstream: Upstream, items: list[dict], device: torch.device,
                 trainable: bool, num_workers: int = 0):
        super().__init__()
        check_modality(upstream, items)
        self.upstream, self.device, self.trainable = upstream, device, trainable
        self.num_workers = num_workers
        if is_text(upstream):
            self.sizes = [len(e.ids) for e in encode_items(upstream, items)]
        else:
            self.sizes = [it["duration"] * upstream.sample_rate / upstream.downsample_rate
                          for it in items]
        self.dataset, self.collate = input_dataset(upstream, items)
        self.train(False)

    def train(self, mode: bool = True) -> LiveLayers:
        from speechssl.tuning import set_train_mode

        self.training = mode
        set_train_mode(self.upstream, mode and self.trainable)
        return self

    def dims(self) -> tuple[int, int]:
        d = self.upstream.describe()
        return d["num_layers"], d["hidden_size"]

    def batches(self, index_batches: list[list[int]]) -> Iterator[tuple[list[int], dict]]:
        """(item indices, collated inputs) of each batch, read by the DataLoader."""
        for batch in loader(self.dataset, self.collate, index_batches, self.num_workers,
                            self.device):
            yield batch["index"].tolist(), batch

    def forward(self, batch: dict) -> tuple[Tensor, Tensor]:
        """A collated batch -> layers (L, B, T, D) float32, lengths (B,)."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.upstream(*model_inputs(batch, self.device))
            layers = stack_layers(out)
        if not self.trainable:
            layers = layers.to(torch.float16).float()
        return layers, out.lengths
