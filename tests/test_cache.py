"""The frozen-feature cache (speechssl/cache/, docs/cache.md): reuse without the upstream,
per-layer reads, keys, staleness and corruption, resume after an interruption, the budget,
text tokens, torchrun ranks, and two run.py cells sharing one cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from speechssl import cache
from speechssl.cache import CachedFeatures, build
from speechssl.data.audio import save_audio
from speechssl.errors import ConfigError
from speechssl.features import cached_features, collate_features, extract_features
from speechssl.upstream.base import Upstream, UpstreamOutput

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
HOP = 160
KEY = {"weights_hash": "w1", "upstream": "fake", "upstream_config": {"name": "fake", "d": 4},
       "corpus": "toy", "split": "train"}


class FakeUpstream(Upstream):
    """L layers of D deterministic per-frame statistics; counts forward calls and items,
    and raises on call ``fail_on`` (1-based) to stand for an interruption."""

    downsample_rate = HOP

    def __init__(self, num_layers: int = 3, dim: int = 4, fail_on: int | None = None):
        super().__init__()
        self.num_layers, self.dim, self.fail_on = num_layers, dim, fail_on
        self.calls = self.items = 0

    def forward(self, x, lengths):
        self.calls += 1
        self.items += x.shape[0]
        if self.fail_on is not None and self.calls >= self.fail_on:
            raise RuntimeError("interrupted")
        B, T = x.shape[0], x.shape[1] // HOP
        frames = x[:, : T * HOP].reshape(B, T, HOP)
        stats = torch.stack([frames.mean(-1), frames.std(-1), frames.amax(-1), frames.amin(-1)],
                            dim=-1)[..., : self.dim]
        hs = [stats * (layer + 1) + 0.1 * layer for layer in range(self.num_layers)]
        return UpstreamOutput(hidden_states=hs, lengths=lengths // HOP)


@dataclass
class Enc:
    ids: list[int]


class FakeText(Upstream):
    modality, downsample_rate, sample_rate, pad_id = "text", 1, 1, 0

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.emb = torch.nn.Embedding(50, 4)

    def encode(self, item):
        return Enc([1] + [3 + (ord(c) % 40) for c in item["text"]] + [2])

    def forward(self, ids, lengths):
        self.calls += 1
        h = self.emb(ids)
        return UpstreamOutput(hidden_states=[h, 2 * h], lengths=lengths)


@pytest.fixture
def items(tmp_path) -> list[dict]:
    """12 noise clips of 0.20 to 0.75 s."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(12):
        dur = 0.2 + 0.05 * i
        path = tmp_path / "wav" / f"u{i:02d}.wav"
        save_audio(path, 0.3 * torch.randn(int(dur * 16000), generator=gen), 16000)
        out.append({"id": f"u{i:02d}", "path": str(path), "duration": dur})
    return out


def make_cfg(tmp_path, **over):
    base = {"cache": True, "cache_dir": str(tmp_path / "features"), "cache_budget_gb": 1,
            "num_workers": 0, "out_dir": str(tmp_path),
            "downstream": {"optim": {"extract_batch_seconds": 1.5}}}
    return OmegaConf.create({**base, **over})


def feats_of(upstream, items, cfg, key=KEY, **kw):
    return cached_features(upstream, items, CPU, key=key, root=cfg.cache_dir,
                           budget_gb=cfg.cache_budget_gb,
                           batch_seconds=cfg.downstream.optim.extract_batch_seconds,
                           num_workers=cfg.num_workers, progress=False, **kw)


def the_dir(cfg) -> Path:
    dirs = [d for d in Path(cfg.cache_dir).iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype == torch.float16
        assert torch.equal(x, y)


def test_second_call_reuses_the_files(items, tmp_path, capsys):
    cfg = make_cfg(tmp_path)
    up = FakeUpstream()
    first = feats_of(up, items, cfg)
    assert up.calls > 1 and up.items == len(items)  # several length-bucketed batches
    assert "wrote 12 items x 3 layers x 4" in capsys.readouterr().out
    fresh = extract_features(FakeUpstream(), items, CPU, batch_seconds=1.5, progress=False)
    assert_same(first, fresh)
    # equal to the fp32 upstream output within fp16 rounding
    with torch.no_grad():
        wav = torch.from_numpy(__import__("soundfile").read(items[5]["path"], dtype="float32")[0])
        out = FakeUpstream()(wav[None], torch.tensor([len(wav)]))
    ref = torch.stack([h[0] for h in out.hidden_states])
    torch.testing.assert_close(first[5].float(), ref, rtol=1e-3, atol=1e-4)

    again = FakeUpstream()
    second = feats_of(again, items, cfg)
    assert again.calls == 0
    assert "reading" in capsys.readouterr().out
    assert isinstance(second, CachedFeatures) and second.in_ram
    assert_same(second, fresh)
    assert second.lengths == [f.shape[1] for f in fresh]
    assert second[-1].shape == (3, fresh[-1].shape[1], 4) and len(second[2:5]) == 3
    # memory-mapped reads give the same values, and both feed collate_features
    mapped = CachedFeatures.open(the_dir(cfg), in_ram=False)
    assert not mapped.in_ram
    assert_same(mapped, fresh)
    a, la = collate_features(second, [0, 7, 11], CPU)
    b, lb = collate_features(fresh, [0, 7, 11], CPU)
    assert torch.equal(a, b) and torch.equal(la, lb) and a.shape[:2] == (3, 3)


def test_layers_read_only_their_files(items, tmp_path, capsys):
    cfg = make_cfg(tmp_path)
    full = feats_of(FakeUpstream(), items, cfg)
    d = the_dir(cfg)
    (d / "layer000.f16").unlink()  # another layer's file gone ...
    (d / "layer002.f16").write_bytes(b"\0" * (d / "layer002.f16").stat().st_size)  # ... or wrong
    for in_ram in (True, False):
        up = FakeUpstream()
        one = feats_of(up, items, cfg, layers=[1]) if in_ram else \
            CachedFeatures.open(d, layers=[1], in_ram=False)
        assert up.calls == 0
        assert_same(one, [f[1:2] for f in full])
    capsys.readouterr()
    # all layers: the missing file is reported and the cache rebuilt
    up = FakeUpstream()
    rebuilt = feats_of(up, items, cfg)
    out = capsys.readouterr().out
    assert f"[cache] {d}: layer file layer000.f16 is missing; rebuilding" in out
    assert up.calls > 0
    assert_same(rebuilt, full)
    with pytest.raises(ConfigError, match="layer 3 out of range"):
        feats_of(FakeUpstream(), items, cfg, layers=[3])


def test_other_weights_or_items_are_other_caches(items, tmp_path):
    cfg = make_cfg(tmp_path)
    feats_of(FakeUpstream(), items, cfg)
    up = FakeUpstream()
    feats_of(up, items, cfg, key={**KEY, "weights_hash": "w2"})
    assert up.calls > 0
    up = FakeUpstream()
    sub = feats_of(up, items[:5], cfg)  # same key, other items (another task's split)
    assert up.items == 5 and len(sub) == 5
    assert len([d for d in Path(cfg.cache_dir).iterdir() if d.is_dir()]) == 3
    # each is reused afterwards
    for key, its in ((KEY, items), ({**KEY, "weights_hash": "w2"}, items), (KEY, items[:5])):
        up = FakeUpstream()
        feats_of(up, its, cfg, key=key)
        assert up.calls == 0


def test_truncated_layer_file_is_reported_and_rebuilt(items, tmp_path, capsys):
    cfg = make_cfg(tmp_path)
    ref = feats_of(FakeUpstream(), items, cfg)
    d = the_dir(cfg)
    path = d / "layer001.f16"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 8)
    capsys.readouterr()
    up = FakeUpstream()
    again = feats_of(up, items, cfg)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "rebuilding" in ln]
    assert lines == [f"[cache] {d}: layer file layer001.f16 has {size - 8} bytes, expected "
                     f"{size} (truncated or overwritten); rebuilding"]
    assert up.calls > 0
    assert_same(again, ref)


@pytest.mark.parametrize("edit,reason", [
    (lambda m: m.update(dim=m["dim"] + 1), "does not match its layer size"),
    (lambda m: m.update(format=0), "format version 0, expected"),
    (lambda m: m["ids"].reverse(), "item ids differ"),
    (lambda m: m["key"].update(weights_hash="other"), "key differs (weights_hash)"),
])
def test_stale_manifest_is_reported_and_rebuilt(items, tmp_path, capsys, edit, reason):
    cfg = make_cfg(tmp_path)
    ref = feats_of(FakeUpstream(), items, cfg)
    d = the_dir(cfg)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    capsys.readouterr()
    up = FakeUpstream()
    again = feats_of(up, items, cfg)
    out = capsys.readouterr().out
    assert f"[cache] {d}: " in out and reason in out and "rebuilding" in out
    assert up.calls > 0
    assert_same(again, ref)


@pytest.mark.parametrize("in_ram", [True, False])
def test_flipped_bytes_fail_the_checksum(items, tmp_path, in_ram):
    cfg = make_cfg(tmp_path)
    feats_of(FakeUpstream(), items, cfg)
    d = the_dir(cfg)
    with open(d / "layer002.f16", "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(cache.StaleCache, match="layer002.f16 fails its CRC32 check"):
        CachedFeatures.open(d, in_ram=in_ram)


@pytest.mark.parametrize("killed", [False, True])
def test_interrupted_extraction_resumes(items, tmp_path, monkeypatch, capsys, killed):
    """An exception after 2 batches (``killed``: a kill, which leaves no chance to commit
    at the exception, plus bytes written after the last commit) resumes with the rest."""
    monkeypatch.setattr(build, "COMMIT_BYTES", 0)  # commit after every batch
    cfg = make_cfg(tmp_path)
    if killed:
        monkeypatch.setattr(build._Writer, "abort", lambda self: self.close())
    up = FakeUpstream(fail_on=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        feats_of(up, items, cfg)
    d = the_dir(cfg)
    assert not (d / "manifest.json").exists()
    done = json.loads((d / "progress.json").read_text())["done"]
    assert 0 < done < len(items)
    if killed:  # half-written data after the last commit
        for name in ("layer000.f16", "layer001.f16", "order.i64"):
            with open(d / name, "ab") as f:
                f.write(b"\x7f" * 24)
    capsys.readouterr()
    rest = FakeUpstream()
    resumed = feats_of(rest, items, cfg)
    assert f"resuming extraction at item {done}/12" in capsys.readouterr().out
    assert rest.items == len(items) - done  # only the remaining items ran
    fresh = extract_features(FakeUpstream(), items, CPU, batch_seconds=1.5, progress=False)
    assert_same(resumed, fresh)
    assert sorted(p.name for p in d.iterdir()) == [
        "index.i64", "layer000.f16", "layer001.f16", "layer002.f16", "manifest.json"]
    manifest = json.loads((d / "manifest.json").read_text())
    uninterrupted = make_cfg(tmp_path / "b")
    feats_of(FakeUpstream(), items, uninterrupted)
    other = json.loads((the_dir(uninterrupted) / "manifest.json").read_text())
    assert manifest["crc32"] == other["crc32"]  # the same bytes in the same order


def test_killed_before_the_manifest_resumes_with_nothing_to_run(items, tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    finish = build._Writer.finish

    def killed(self, seconds):
        self.commit()
        raise KeyboardInterrupt

    monkeypatch.setattr(build._Writer, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        feats_of(FakeUpstream(), items, cfg)
    assert not (the_dir(cfg) / "manifest.json").exists()
    monkeypatch.setattr(build._Writer, "finish", finish)
    up = FakeUpstream()
    feats = feats_of(up, items, cfg)
    assert up.calls == 0
    assert_same(feats, extract_features(FakeUpstream(), items, CPU, batch_seconds=1.5,
                                        progress=False))


def test_over_budget_returns_none(items, tmp_path, capsys):
    cfg = make_cfg(tmp_path, cache_budget_gb=1e-9)
    up = FakeUpstream()
    assert feats_of(up, items, cfg) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "exceed cache_budget_gb=1e-09" in out[0] and "on the fly" in out[0]
    assert up.calls == 1  # one (shortest) batch tells the layer count and size
    assert not any(d.is_dir() for d in Path(cfg.cache_dir).iterdir())  # nothing written


def test_text_items_get_tokens_on_a_hit(tmp_path):
    cfg = make_cfg(tmp_path)
    texts = ["a short one", "another sentence here", "x", "the last text item of four"]

    def text_items():
        return [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)]

    first_items = text_items()
    up = FakeText()
    first = feats_of(up, first_items, cfg)
    assert up.calls > 0 and all("_tokens" in it for it in first_items)
    hit_items = text_items()
    again = FakeText()
    again.load_state_dict(up.state_dict())
    second = feats_of(again, hit_items, cfg)
    assert again.calls == 0
    assert [it["_tokens"].ids for it in hit_items] == [it["_tokens"].ids for it in first_items]
    assert [f.shape for f in second] == [(2, len(it["_tokens"].ids), 4) for it in hit_items]
    assert_same(second, list(first))
    # a changed text is another cache
    changed = text_items()
    changed[2]["text"] = "y"
    third = FakeText()
    feats_of(third, changed, cfg)
    assert third.calls > 0


@pytest.mark.parametrize("key,value,match", [
    ("cache", "yes", "cache='yes'"),
    ("cache_budget_gb", -1, "cache_budget_gb=-1"),
    ("cache_budget_gb", "big", "cache_budget_gb='big'"),
    ("cache_dir", "", "cache_dir=''"),
])
def test_bad_cache_keys_are_config_errors(key, value, match):
    from hydra import compose, initialize_config_dir

    from speechssl.config import check_values

    with initialize_config_dir(config_dir=str(ROOT / "recipes"), version_base="1.3"):
        cfg = compose("config", overrides=["device=cpu"])
    assert cfg.cache is True and cfg.cache_budget_gb == 20
    assert cfg.cache_dir == f"{cfg.out_dir}/features"
    check_values(cfg)
    cfg[key] = value
    with pytest.raises(ConfigError, match=match):
        check_values(cfg)


# ------------------------------------------------------------------ torchrun: rank 0 writes


def _worker(root: str) -> None:
    """torchrun worker: both ranks ask for the same split; writes its forward-call count."""
    from speechssl import distributed as dist

    dist.init("cpu")
    items = json.loads((Path(root) / "items.json").read_text())
    up = FakeUpstream()
    feats = feats_of(up, items, make_cfg(Path(root)))
    rank = dist.world().rank
    torch.save({"calls": up.calls, "feats": [f.clone() for f in feats]},
               Path(root) / f"rank{rank}.pt")
    dist.cleanup()


def test_torchrun_rank0_extracts_and_the_others_read(items, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed next to this python")
    (tmp_path / "items.json").write_text(json.dumps(items))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_addr=127.0.0.1",
                           f"--master_port={port}", __file__, str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["calls"] > 0 and r1["calls"] == 0
    assert_same(r0["feats"], r1["feats"])
    assert proc.stdout.count("wrote 12 items") == 1


# ------------------------------------------------------------------ end to end through run.py


def test_run_py_second_cell_reuses_the_cache(data_dir, tmp_path):
    """Two ks cells that differ only in the learning rate: the second extracts nothing."""
    base = [sys.executable, "run.py", "upstream=fbank", "downstream=ks", "corpus.size=tiny",
            f"data_dir={data_dir}", f"out_dir={tmp_path}", "progress=false", "device=cpu",
            "downstream.optim.max_steps=4", "downstream.optim.eval_every=2"]
    outs = []
    for lr in ("1e-3", "3e-3"):
        proc = subprocess.run([*base, f"downstream.optim.lr={lr}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        outs.append(proc.stdout)
    assert outs[0].count("[cache]") == 3 and outs[0].count("wrote") == 3  # train, dev, test
    assert outs[1].count("[cache]") == 3 and outs[1].count("reading") == 3
    assert "wrote" not in outs[1]
    assert len([d for d in (tmp_path / "features").iterdir() if d.is_dir()]) == 3
    runs = list((tmp_path / "runs").glob("*/ks/*/seed0-*"))
    assert len(runs) == 2  # two cells, one cache


if __name__ == "__main__":
    _worker(sys.argv[1])
