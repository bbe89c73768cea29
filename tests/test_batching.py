"""Tests for AudioDataset, collate_audio and LengthBucketSampler."""

import random

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from speechssl.data.audio import save_audio
from speechssl.data.batching import (
    AudioDataset,
    LengthBucketSampler,
    bucket_batches,
    collate_audio,
)
from speechssl.errors import AudioError, ConfigError

# ---------------------------------------------------------------- dataset and collate


def _item(path, duration, line=None):
    item = {"id": path.stem, "path": str(path), "duration": duration}
    if line is not None:
        item.update(_line=line, _manifest="/corpus/train.jsonl")
    return item


@pytest.fixture
def items(tmp_path):
    out = []
    for k, n in enumerate([1600, 4000, 800]):
        path = tmp_path / f"u{k}.wav"
        save_audio(path, 0.1 * torch.ones(n))
        out.append(_item(path, n / 16000, line=k + 1))
    return out


def test_dataset_and_collate(items):
    ds = AudioDataset(items)
    assert len(ds) == 3
    ex = ds[1]
    assert ex["index"] == 1 and ex["item"] is items[1] and ex["audio"].shape == (4000,)
    batch = collate_audio([ds[0], ds[1], ds[2]])
    assert batch["audio"].shape == (3, 4000) and batch["audio"].dtype == torch.float32
    assert batch["lengths"].tolist() == [1600, 4000, 800]
    assert batch["lengths"].dtype == torch.long and batch["index"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["items"] == items
    assert torch.all(batch["audio"][0, 1600:] == 0) and torch.all(batch["audio"][2, 800:] == 0)
    assert torch.allclose(batch["audio"][0, :1600], torch.full((1600,), 0.1), atol=1e-4)


def test_dataloader_with_sampler(items):
    ds = AudioDataset(items)
    sampler = LengthBucketSampler([it["duration"] for it in items], max_total=0.6, seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio)
    seen = sorted(i for batch in loader for i in batch["index"].tolist())
    assert seen == [0, 1, 2]


def test_duration_mismatch_is_caught(items):
    items[1]["duration"] = 0.5  # actual 0.25 s
    ds = AudioDataset(items)
    with pytest.raises(AudioError) as info:
        ds[1]
    msg = str(info.value)
    assert items[1]["path"] in msg and "/corpus/train.jsonl:2" in msg
    assert "0.250 s" in msg and "0.500 s" in msg
    assert AudioDataset(items, check_duration=False)[1]["audio"].shape == (4000,)


def test_duration_within_tolerance_passes(items):
    items[1]["duration"] = 0.25 + 0.04
    assert AudioDataset(items)[1]["audio"].shape == (4000,)


def test_wrong_sample_rate_header_is_caught(tmp_path):
    path = tmp_path / "fast.wav"
    sf.write(str(path), np.zeros(16000, dtype=np.float32), 8000)  # 16k samples labelled 8 kHz
    with pytest.raises(AudioError, match="does not match"):
        AudioDataset([_item(path, 1.0, line=4)])[0]


def test_load_error_names_manifest_line(tmp_path):
    ds = AudioDataset([_item(tmp_path / "gone.wav", 1.0, line=7)])
    with pytest.raises(AudioError) as info:
        ds[0]
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "gone.wav")) and "/corpus/train.jsonl:7" in msg


# ---------------------------------------------------------------- sampler


def _lengths(n=300, seed=0):
    rng = random.Random(seed)
    return [rng.uniform(0.5, 12.0) for _ in range(n)]


def test_bucket_batches_respect_budget_and_oversized_items():
    lengths = [1.0, 1.0, 1.0, 5.0, 20.0, 2.0]
    batches = bucket_batches(lengths, [0, 1, 2, 5, 3, 4], max_total=8.0)
    assert batches == [[0, 1, 2, 5], [3], [4]]
    assert bucket_batches(lengths, range(6), max_total=100.0, max_size=4) == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_covers_every_index_once_within_budget(shuffle):
    lengths = _lengths() + [40.0]  # one item longer than max_total
    sampler = LengthBucketSampler(lengths, max_total=30.0, shuffle=shuffle, seed=1, max_size=8)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(lengths)))
        for b in batches:
            assert len(b) <= 8
            assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 30.0


def test_sampler_is_deterministic_and_varies_by_epoch():
    lengths = _lengths()
    a = LengthBucketSampler(lengths, max_total=40.0, seed=5)
    b = LengthBucketSampler(lengths, max_total=40.0, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = LengthBucketSampler(lengths, max_total=40.0, seed=6)
    c.set_epoch(2)
    assert list(a) != list(c)


def test_sampler_without_shuffle_is_sorted_by_length():
    lengths = _lengths(50)
    batches = list(LengthBucketSampler(lengths, max_total=25.0, shuffle=False))
    flat = [i for b in batches for i in b]
    assert flat == sorted(range(50), key=lambda i: lengths[i])


def test_sampler_buckets_are_tight():
    lengths = _lengths(1000)
    batches = list(LengthBucketSampler(lengths, max_total=60.0, seed=0))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)


@pytest.mark.parametrize("num_replicas", [2, 3, 7])
def test_sampler_distributed_partition(num_replicas):
    lengths = _lengths(101)
    full = LengthBucketSampler(lengths, max_total=35.0, seed=2)
    full.set_epoch(1)
    global_batches = list(full)
    per_rank = []
    for rank in range(num_replicas):
        s = LengthBucketSampler(
            lengths, max_total=35.0, seed=2, num_replicas=num_replicas, rank=rank
        )
        s.set_epoch(1)
        per_rank.append(list(s))
        assert len(per_rank[-1]) == len(s)
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1
    n = counts.pop()
    assert n == -(-len(global_batches) // num_replicas)
    # rank r takes global batches r, r+R, ...; padding repeats batches from the start
    padded = global_batches + global_batches[: n * num_replicas - len(global_batches)]
    for rank in range(num_replicas):
        assert per_rank[rank] == padded[rank::num_replicas]
    covered = {i for batches in per_rank for b in batches for i in b}
    assert covered == set(range(101))


def test_sampler_more_replicas_than_batches():
    s = [LengthBucketSampler([1.0, 1.0], max_total=10.0, num_replicas=4, rank=r) for r in range(4)]
    for sampler in s:
        assert len(sampler) == 1 and [sorted(b) for b in sampler] == [[0, 1]]


def test_sampler_config_errors():
    with pytest.raises(ConfigError):
        LengthBucketSampler([1.0], max_total=0)
    with pytest.raises(ConfigError):
        LengthBucketSampler([1.0], max_total=1.0, num_replicas=2, rank=2)
    with pytest.raises(ConfigError):
        LengthBucketSampler([], max_total=1.0)
    with pytest.raises(ConfigError):
        LengthBucketSampler([1.0, float("nan")], max_total=1.0)


def test_weighted_sampler_balances_classes_and_repeats_per_epoch():
    """``weights`` (s3prl's class-balanced KS sampler, ``optim.class_balanced``): each epoch
    draws N items with replacement in proportion to the weights, deterministic per (seed,
    epoch); 1 / class size makes a 9:1 split come out about even."""
    labels = ["a"] * 90 + ["b"] * 10
    weights = [1 / 90 if c == "a" else 1 / 10 for c in labels]
    s = LengthBucketSampler([1.0] * 100, max_total=10.0, seed=3, weights=weights)
    drawn = []
    for epoch in range(20):
        s.set_epoch(epoch)
        batches = list(s)
        assert sum(len(b) for b in batches) == 100  # N draws per epoch
        drawn += [i for b in batches for i in b]
    share_b = sum(labels[i] == "b" for i in drawn) / len(drawn)
    assert 0.45 < share_b < 0.55  # 0.1 without the weights
    s.set_epoch(4)
    again = LengthBucketSampler([1.0] * 100, max_total=10.0, seed=3, weights=weights)
    again.set_epoch(4)
    assert list(s) == list(again)
    with pytest.raises(ConfigError, match="one finite value >= 0 per item"):
        LengthBucketSampler([1.0] * 3, max_total=10.0, weights=[1.0, 1.0])
    with pytest.raises(ConfigError, match="shuffle=True"):
        LengthBucketSampler([1.0] * 2, max_total=10.0, shuffle=False, weights=[1.0, 1.0])
