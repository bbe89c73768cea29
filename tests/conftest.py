"""Shared fixtures: the tiny synthesized corpus (generated once per session) and a
config composer that points every path at a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

# importing speechssl.config also stores the class defaults the recipes compose on
from speechssl.config import RECIPES  # noqa: E402

# pytest-xdist workers (pyproject's addopts: -n auto, at most 2): each gets one torch
# thread, so the workers never ask for more threads than there are cores; recurrent layers
# slow down many times over when threads outnumber free cores. SPEECHSSL_TEST_THREADS=1
# for a serial run (-n 0) when other jobs share the cores.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(int(os.environ.get("SPEECHSSL_TEST_THREADS",
                                         "1" if XDIST_WORKER else "2")))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data dir holding the tiny synthesized corpus (seed 0); under pytest-xdist one dir
    for all workers (the run's common temp dir: ensure_corpus lets one caller synthesize
    while the others wait, and tests that change a corpus change a copy)."""
    from speechssl.data.synth import ensure_corpus

    if XDIST_WORKER:
        root = tmp_path_factory.getbasetemp().parent / "data"
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("data")
    ensure_corpus(root / "synth", size="tiny", seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_corpus(data_dir):
    from omegaconf import OmegaConf

    from speechssl.data.corpus import load_corpus

    cfg = OmegaConf.create({"name": "synth", "size": "tiny", "seed": 0, "root": None,
                            "num_workers": None})
    return load_corpus(cfg, data_dir, progress=False)


@pytest.fixture
def make_cfg(data_dir, tmp_path):
    """compose(overrides) -> the full config, on the tiny corpus, outputs under tmp_path."""

    def _make(*overrides: str):
        with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
            return compose("config", overrides=[
                f"data_dir={data_dir}", f"out_dir={tmp_path / 'outputs'}", "corpus.size=tiny",
                "progress=false", "device=cpu", *overrides])

    return _make


@pytest.fixture(scope="module")
def clips(tiny_corpus):
    """Four tiny-corpus utterances cut to one second (from 0.5 s in): (B, S) audio and (B,)
    lengths, for a few dozen fast pre-training steps."""
    from speechssl.data.batching import AudioDataset, collate_audio

    items = tiny_corpus.items("pretrain", "train")[:4]
    batch = collate_audio([AudioDataset(items)[i] for i in range(len(items))])
    return batch["audio"][:, 8000:24000].contiguous(), torch.full((4,), 16000)
