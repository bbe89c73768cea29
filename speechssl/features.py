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
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.nn.masking import valid_mask
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


# ---------------------------------------------------------------- checks of the outputs

# frames may differ from input / downsample_rate by this many, or by this share of the
# expected count, whichever is larger (the tolerance of the upstream contract,
# tests/test_contract.py)
FRAME_SLACK = 3
FRAME_SLACK_SHARE = 0.02


class UpstreamOutputError(SpeechSSLError):
    """An upstream's output that would give a result that is not a result (NaN features,
    layers of different widths, lengths in samples, a constant layer). The message names
    the upstream and the problem, in one line."""


def upstream_label(upstream: Upstream) -> str:
    """``upstream 'apc'`` (its registered name), or ``upstream 'module:Class'``."""
    name = getattr(upstream, "name", None)
    if not isinstance(name, str) or not name:
        name = f"{type(upstream).__module__}:{type(upstream).__qualname__}"
    return f"upstream {name!r}"


def check_output(upstream: Upstream, out, input_lengths: Tensor) -> None:
    """UpstreamOutputError unless ``out`` (the upstream's output for inputs of
    ``input_lengths`` samples or tokens) is a result: hidden states (B, T, D) with one T and
    one width D for every layer, floating point and finite on the valid frames; lengths (B,)
    integer frame counts (not samples) with max(lengths) == T, each about
    input / downsample_rate (:data:`FRAME_SLACK`); and no layer constant over every valid
    frame of the batch (a dead layer: NaN-free, yet a probe on it is at chance). Checked on
    the first batch of every extraction and every probe that runs the upstream itself."""
    who = upstream_label(upstream)

    def fail(problem: str) -> UpstreamOutputError:
        return UpstreamOutputError(f"{who}: {problem}")

    states = getattr(out, "hidden_states", None)
    if not isinstance(states, list | tuple) or not states or \
            not all(isinstance(h, Tensor) for h in states):
        raise fail(f"returned {type(out).__name__} without hidden states; forward must return "
                   f"UpstreamOutput(hidden_states=[(B, T, D) per layer], lengths=(B,))")
    B = int(input_lengths.shape[0])
    first = states[0]
    for k, h in enumerate(states):
        if h.dim() != 3 or h.shape[0] != B:
            raise fail(f"layer {k} has shape {tuple(h.shape)}, not (B={B}, T, D): every "
                       f"hidden state must be (batch, frames, features)")
        if h.shape[-1] != first.shape[-1]:
            raise fail(f"layers differ in width: layer 0 has D={first.shape[-1]}, layer {k} "
                       f"has D={h.shape[-1]}; every layer must have one width D")
        if h.shape[1] != first.shape[1]:
            raise fail(f"layers differ in frames: layer 0 has T={first.shape[1]}, layer {k} "
                       f"has T={h.shape[1]}; every layer must have the same T")
        if not h.is_floating_point():
            raise fail(f"layer {k} is {h.dtype}, not floating point")
    T = int(first.shape[1])
    lengths = getattr(out, "lengths", None)
    if not isinstance(lengths, Tensor) or tuple(lengths.shape) != (B,):
        raise fail(f"lengths of shape {tuple(getattr(lengths, 'shape', ()))}, not (B={B},)")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise fail(f"lengths are {lengths.dtype}; they must be integer frame counts")
    lengths = lengths.detach().to("cpu", torch.long)
    inputs = input_lengths.detach().to("cpu", torch.long)
    longest = int(lengths.max())
    unit = "tokens" if is_text(upstream) else "samples"
    if longest != T:
        samples = f" (the input's length in {unit}: lengths must count frames, not {unit})" \
            if longest == int(inputs.max()) and upstream.downsample_rate != 1 else ""
        raise fail(f"max(lengths)={longest} but the hidden states have T={T} frames"
                   f"{samples}; max(lengths) must equal T")
    if int(lengths.min()) < 0:
        raise fail(f"negative lengths {lengths.tolist()}")
    rate = upstream.downsample_rate
    expected = inputs.double() / rate
    slack = torch.clamp(FRAME_SLACK_SHARE * expected, min=FRAME_SLACK)
    excess = (lengths.double() - expected).abs() - slack
    if bool((excess > 0).any()):
        b = int(excess.argmax())  # the item furthest off, whatever the batch's order
        raise fail(f"{int(lengths[b])} frames for an input of {int(inputs[b])} {unit}, not "
                   f"about {float(expected[b]):.0f} at its downsample_rate={rate} (input "
                   f"{unit} per frame): declare the rate its frames have")
    mask = valid_mask(lengths, T).to(first.device)
    with torch.no_grad():
        for k, h in enumerate(states):
            valid = h.detach()[mask]  # (frames, D)
            bad = int((~torch.isfinite(valid)).sum())
            if bad:
                raise fail(f"layer {k} has {bad} NaN/Inf values in {valid.shape[0]} frames of "
                           f"the first batch")
            if valid.shape[0] >= 2 and bool((valid == valid[:1]).all()):
                raise fail(f"layer {k} is constant: all {valid.shape[0]} frames of the first "
                           f"batch have the same features (a dead layer)")


def check_finite(upstream: Upstream, layers: Tensor, lengths: Tensor, what: str) -> None:
    """UpstreamOutputError when stacked layers (L, B, T, D) hold NaN/Inf on valid frames:
    after the fp16 cast, values beyond float16's range (65504) have become Inf."""
    mask = valid_mask(lengths.to(layers.device), layers.shape[2])
    if bool(torch.isfinite(layers[:, mask]).all()):
        return
    for k in range(layers.shape[0]):
        bad = int((~torch.isfinite(layers[k][mask])).sum())
        if bad:
            raise UpstreamOutputError(
                f"{upstream_label(upstream)}: layer {k} has {bad} NaN/Inf values in a batch of "
                f"{what} (NaN, or |x| beyond float16's 65504)")


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
    first = True
    for batch in loader(dataset, collate, batches, num_workers, device):
        with torch.inference_mode():
            out = upstream(*model_inputs(batch, device, non_blocking=pin))
            if first:  # a result or no cache: raised before anything is written
                check_output(upstream, out, batch["lengths"])
                first = False
            stacked = stack_layers(out, torch.float16).cpu()  # cast on the device: half the copy
        check_finite(upstream, stacked, out.lengths.cpu(), "the float16 features")
        yield batch["index"].tolist(), stacked, out.lengths.tolist()


def mean_pooled(batches: Iterator[tuple[list[int], Tensor, list[int]]]
                ) -> Iterator[tuple[list[int], Tensor, list[int]]]:
    """:func:`extract`'s batches with each item's frames replaced by their mean: (indices,
    (L, B, 1, D) fp16, [1] * B). The mean is taken in float32 over the item's valid frames.
    It commutes with the featurizer's weighted sum and with a per-dimension affine map
    (standardisation), so a mean-pool probe trained on these sees what it would see on
    every frame."""
    for idx, stacked, lengths in batches:
        n = torch.tensor(lengths)
        mask = valid_mask(n, stacked.shape[2])[None, :, :, None]
        total = (stacked.float() * mask).sum(2, keepdim=True)
        yield idx, (total / n.clamp(min=1)[None, :, None, None]).to(torch.float16), [1] * len(idx)


def extract_features(upstream: Upstream, items: list[dict], device: torch.device,
                     batch_seconds: float = 160.0, num_workers: int = 0,
                     progress: bool = True, desc: str = "features",
                     pooled: bool = False) -> list[Tensor]:
    """Run the frozen upstream over ``items`` in memory (no cache); returns one (L, T_i, D)
    fp16 CPU tensor per item, in item order (T_i = 1, the mean over frames, when
    ``pooled``). Text items are tokenized first (:func:`encode_items`)."""
    check_modality(upstream, items)
    if is_text(upstream):
        encode_items(upstream, items)
    feats: list[Tensor | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="utt", leave=False)
    batches = extract(upstream, items, list(range(len(items))), device, batch_seconds,
                      num_workers)
    for idx, stacked, lengths in (mean_pooled(batches) if pooled else batches):
        for b, (i, n) in enumerate(zip(idx, lengths, strict=True)):
            feats[i] = stacked[:, b, :n].clone()
        bar.update(len(idx))
    bar.close()
    return feats


def cached_features(upstream: Upstream, items: list[dict], device: torch.device, *, key: dict,
                    root, budget_gb: float, batch_seconds: float, num_workers: int = 0,
                    layers: list[int] | None = None, progress: bool = True,
                    desc: str = "features", pooled: bool = False) -> Sequence[Tensor] | None:
    """The frozen features of one split from the cache in ``root`` (extracted on first use,
    speechssl/cache.py), indexed like ``items``; None when the split exceeds ``budget_gb``.
    ``pooled``: each item's mean over frames, (L, 1, D) (:func:`mean_pooled`), cached apart
    from the frames (its key says so). Text items get ``item["_tokens"]`` in every case."""
    from speechssl import cache

    check_modality(upstream, items)
    if is_text(upstream):
        encode_items(upstream, items)
    if not items:
        return []

    def run(todo):
        batches = extract(upstream, items, todo, device, batch_seconds, num_workers)
        return mean_pooled(batches) if pooled else batches

    return cache.split_features(
        root, {**key, "pooled": "mean"} if pooled else key, items, text=is_text(upstream),
        frames=float(len(items)) if pooled else estimate_frames(upstream, items), extract=run,
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


def batch_sizes(items: list[dict], text: bool) -> list[float]:
    """The size of each item in the unit of probe batches: seconds of audio
    (``optim.batch_seconds``: the same audio per batch whatever the upstream's frame rate,
    or whether the features are pooled), or tokens (``optim.batch_tokens``; items encoded
    by :func:`encode_items`)."""
    if text:
        return [float(len(it["_tokens"].ids)) for it in items]
    return [float(it["duration"]) for it in items]


class CachedLayers(nn.Module):
    """The layers of a batch read from frozen features: one (L, T_i, D) tensor per item.
    ``sizes``: each item's size in the batch unit (:func:`batch_sizes`). ``pooled``: the
    features are each item's mean vector (T_i = 1, :func:`mean_pooled`): they are held
    stacked in memory, a batch is an index into them, and each item counts 1 (batches
    count utterances, ``optim.batch_utterances``)."""

    def __init__(self, feats: Sequence[Tensor], device: torch.device, sizes: list[float],
                 pooled: bool = False):
        super().__init__()
        if len(sizes) != len(feats):
            raise ValueError(f"{len(sizes)} sizes for {len(feats)} items")
        self.feats, self.device, self.sizes, self.pooled = feats, device, list(sizes), pooled
        if pooled:
            self.stacked = torch.stack([f[:, 0] for f in feats]).to(device)  # (N, L, D) fp16
            self.sizes = [1.0] * len(feats)

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
        if self.pooled:
            layers = self.stacked[torch.as_tensor(idx, device=self.device)].float()
            return (layers.transpose(0, 1).unsqueeze(2),
                    torch.ones(len(idx), dtype=torch.long, device=self.device))
        return collate_features(self.feats, idx, self.device)


class LiveLayers(nn.Module):
    """The layers of a batch computed by the upstream on the spot, from inputs read by a
    DataLoader (``num_workers`` workers). Frozen: eval mode, no gradients, rounded to fp16
    as the cache stores them (cache=false changes memory and time, not results). Tuned
    (``trainable``): gradients flow, and ``train()`` puts the upstream in train mode
    (speechssl.tuning.set_train_mode).

    ``sizes`` per item: tokens (text; each item gets ``item["_tokens"]``, as in feature
    extraction) or seconds (audio): :func:`batch_sizes`."""

    def __init__(self, upstream: Upstream, items: list[dict], device: torch.device,
                 trainable: bool, num_workers: int = 0):
        super().__init__()
        check_modality(upstream, items)
        self.upstream, self.device, self.trainable = upstream, device, trainable
        self.num_workers = num_workers
        if is_text(upstream):
            encode_items(upstream, items)
        self.sizes = batch_sizes(items, is_text(upstream))
        self.dataset, self.collate = input_dataset(upstream, items)
        self.checked = False  # the first batch's outputs are checked (check_output)
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
            if not self.checked:
                check_output(self.upstream, out, batch["lengths"])
                self.checked = True
            layers = stack_layers(out)
        if not self.trainable:  # rounded as the cache stores them, and checked as it is
            layers = layers.to(torch.float16).float()
            check_finite(self.upstream, layers, out.lengths, "the float16 features")
        return layers, out.lengths
