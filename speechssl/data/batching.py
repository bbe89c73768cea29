"""Audio dataset, padding collate function and a length-bucketing batch sampler."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from speechssl.data.audio import load_audio
from speechssl.errors import AudioError, ConfigError

__all__ = [
    "AudioDataset",
    "LengthBucketSampler",
    "bucket_batches",
    "collate_audio",
    "duration_tolerance",
]


def _where(item: dict) -> str:
    """`` (manifest <path>:<line>)`` suffix for messages, or ``""`` if unknown."""
    if "_manifest" in item:
        return f" (manifest {item['_manifest']}:{item.get('_line', '?')})"
    return ""


def duration_tolerance(duration: float) -> float:
    """Allowed |loaded - manifest| duration difference in seconds: max(0.05 s, 2%)."""
    return max(0.05, 0.02 * duration)


class AudioDataset(Dataset):
    """Loads the audio of manifest items.

    Args:
        items: manifest items with at least ``path`` (and ``duration`` when
            ``check_duration``), e.g. from :func:`speechssl.data.manifest.read_manifest`.
        sample_rate: target sample rate in Hz.
        check_duration: raise :class:`AudioError` when the loaded duration differs from
            ``item["duration"]`` by more than :func:`duration_tolerance`.

    ``dataset[i]`` is ``{"index": i, "audio": Tensor (T,), "item": items[i]}``.
    """

    def __init__(self, items: list[dict], sample_rate: int = 16000, check_duration: bool = True):
        self.items = items
        self.sample_rate = sample_rate
        self.check_duration = check_duration

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        try:
            audio = load_audio(item["path"], self.sample_rate)
        except AudioError as exc:
            raise AudioError(f"{exc}{_where(item)}") from exc
        if self.check_duration and "duration" in item:
            actual = audio.shape[0] / self.sample_rate
            expected = float(item["duration"])
            if abs(actual - expected) > duration_tolerance(expected):
                raise AudioError(
                    f"{item['path']}: loaded duration {actual:.3f} s does not match the "
                    f"manifest duration {expected:.3f} s{_where(item)}"
                )
        return {"index": i, "audio": audio, "item": item}


def collate_audio(batch: list[dict]) -> dict:
    """Zero-pad a list of :class:`AudioDataset` examples into a batch.

    Returns:
        ``{"audio": Tensor (B, T_max) float, "lengths": Tensor (B,) long,
        "index": Tensor (B,) long, "items": list of B dicts}``.
    """
    lengths = torch.tensor([ex["audio"].shape[0] for ex in batch], dtype=torch.long)
    t_max = int(lengths.max()) if len(batch) else 0
    audio = torch.zeros(len(batch), t_max, dtype=torch.float32)
    for b, ex in enumerate(batch):
        audio[b, : ex["audio"].shape[0]] = ex["audio"]
    return {
        "audio": audio,
        "lengths": lengths,
        "index": torch.tensor([ex["index"] for ex in batch], dtype=torch.long),
        "items": [ex["item"] for ex in batch],
    }


def bucket_batches(
    lengths: Sequence[float], order: Sequence[int], max_total: float, max_size: int | None = None
) -> list[list[int]]:
    """Greedily cut ``order`` into consecutive batches of bounded padded size.

    A batch grows while ``len(batch) * max(lengths[batch]) <= max_total`` and
    ``len(batch) <= max_size``; an item longer than ``max_total`` forms its own batch.

    Args:
        lengths: length of every item (N,).
        order: item indices in the order to batch them (a permutation of range(N)).
        max_total: budget for batch size times the longest item in the batch.
        max_size: optional cap on items per batch.

    Returns:
        The batches, each a list of indices.
    """
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0.0
    for idx in order:
        length = lengths[idx]
        grown = max(longest, length)
        full = max_size is not None and len(batch) >= max_size
        if batch and (full or (len(batch) + 1) * grown > max_total):
            batches.append(batch)
            batch, grown = [], length
        batch.append(idx)
        longest = grown
    if batch:
        batches.append(batch)
    return batches


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch.Generator seeded from the pair (seed, epoch)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler that groups items of similar length under a padded-size budget.

    Indices are sorted by length (with a seeded random tie-break and +-``noise`` relative
    jitter when ``shuffle`` so buckets vary between epochs), cut greedily with
    :func:`bucket_batches`, and the batch order is shuffled with a generator seeded by
    ``(seed, epoch)``. For distributed training every rank gets the same number of batches
    (the list is padded by repeating batches from its start) and rank ``r`` takes batches
    ``r, r + R, r + 2R, ...``.

    Args:
        lengths: length of every item (N,), in any unit (seconds, samples).
        max_total: budget for batch size times the longest item, same unit as ``lengths``.
        shuffle: randomise bucketing and batch order per epoch; if False, batches are in
            ascending length order.
        seed: base random seed.
        num_replicas: number of distributed ranks R.
        rank: this rank, in ``[0, R)``.
        max_size: optional cap on items per batch.
        noise: relative jitter of the sort keys when ``shuffle`` (cost still uses true lengths).
        weights: optional sampling weight of every item: each epoch then draws N items with
            replacement in proportion to them (seeded by ``(seed, epoch)``; e.g. 1 / class
            size for s3prl's class-balanced KS sampler) and buckets the draw; needs ``shuffle``.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        max_total: float,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        max_size: int | None = None,
        noise: float = 0.02,
        weights: Sequence[float] | None = None,
    ):
        super().__init__()
        self.lengths = [float(x) for x in lengths]
        if not self.lengths:
            raise ConfigError("LengthBucketSampler: lengths is empty")
        if not all(math.isfinite(x) and x >= 0 for x in self.lengths):
            raise ConfigError("LengthBucketSampler: lengths must be finite and >= 0")
        if not max_total > 0:
            raise ConfigError(f"LengthBucketSampler: max_total must be > 0, got {max_total}")
        if max_size is not None and max_size < 1:
            raise ConfigError(f"LengthBucketSampler: max_size must be >= 1, got {max_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(
                f"LengthBucketSampler: need 0 <= rank < num_replicas, got rank={rank}, "
                f"num_replicas={num_replicas}"
            )
        if not 0 <= noise < 1:
            raise ConfigError(f"LengthBucketSampler: noise must be in [0, 1), got {noise}")
        self.max_total = float(max_total)
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_size = max_size
        self.noise = noise
        self.weights = None
        if weights is not None:
            w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
            if len(w) != len(self.lengths) or not bool(torch.isfinite(w).all()) \
                    or bool((w < 0).any()) or not float(w.sum()) > 0:
                raise ConfigError("LengthBucketSampler: weights must be one finite value >= 0 "
                                  "per item, not all 0")
            if not shuffle:
                raise ConfigError("LengthBucketSampler: weights need shuffle=True")
            self.weights = w
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) batches the next iteration yields."""
        self.epoch = epoch

    def _order(self, g: torch.Generator | None) -> list[int]:
        """Indices sorted by (jittered) length; ties broken randomly if ``g`` is given."""
        lengths = torch.tensor(self.lengths, dtype=torch.float64)
        if g is None:
            return torch.argsort(lengths, stable=True).tolist()
        if self.weights is not None:  # a weighted draw with replacement, bucketed by length
            drawn = torch.multinomial(self.weights, len(lengths), replacement=True, generator=g)
            jitter = 1.0 + self.noise * (
                2.0 * torch.rand(len(drawn), generator=g, dtype=torch.float64) - 1.0)
            return drawn[torch.argsort(lengths[drawn] * jitter, stable=True)].tolist()
        tie = torch.randperm(len(lengths), generator=g)
        jitter = 1.0 + self.noise * (
            2.0 * torch.rand(len(lengths), generator=g, dtype=torch.float64) - 1.0
        )
        keys = (lengths * jitter)[tie]
        return tie[torch.argsort(keys, stable=True)].tolist()

    def _rank_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (cached per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        g = _epoch_generator(self.seed, self.epoch) if self.shuffle else None
        batches = bucket_batches(self.lengths, self._order(g), self.max_total, self.max_size)
        if g is not None:
            batches = [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]
        per_rank = -(-len(batches) // self.num_replicas)
        padded = [batches[k % len(batches)] for k in range(per_rank * self.num_replicas)]
        mine = padded[self.rank :: self.num_replicas]
        self._cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self._rank_batches()])

    def __len__(self) -> int:
        return len(self._rank_batches())
