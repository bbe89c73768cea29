"""torchrun / DistributedDataParallel: 2 CPU processes on gloo follow the single-process
run (downstream probe and pre-training), and a 2-process run resumes in 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from speechssl import distributed as dist
from speechssl.errors import ConfigError
from speechssl.pretrain import pretrain
from speechssl.upstream.load import pretrain_dir

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
COMMON = ["corpus.size=tiny", "progress=false", "device=cpu", "num_threads=1"]
# dropout off: the two runs draw different masks (batch shapes differ per rank)
APC = ["upstream=apc", "upstream.hidden_size=32", "upstream.dropout=0",
       "upstream.pretrain.batch_seconds=20", "upstream.pretrain.save_every=2",
       "upstream.pretrain.log_every=1"]
KS = ["upstream=fbank", "downstream=ks", "downstream.optim.max_steps=6",
      "downstream.optim.eval_every=3", "downstream.optim.batch_seconds=8",
      "downstream.optim.lr=1e-2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    """`python run.py ARGS` (nproc 1) or `torchrun --nproc_per_node=N run.py ARGS`."""
    if nproc == 1:
        cmd = [sys.executable, "run.py", *args]
    else:
        if not TORCHRUN.is_file():
            pytest.skip("torchrun not installed next to this python")
        cmd = [str(TORCHRUN), f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "run.py", *args]
    env = {k: v for k, v in os.environ.items() if k not in dist.ENV}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def only(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def assert_weights_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, (a[k] - b[k]).abs().max())


# --- pure helpers -------------------------------------------------------------------------

def test_shard_bounds_cover_the_batch_once():
    for n in range(0, 9):
        for world in (1, 2, 3, 4):
            spans = [dist.shard_bounds(n, r, world) for r in range(world)]
            covered = [i for a, b in spans for i in range(a, b)]
            assert covered == list(range(n))
            sizes = [b - a for a, b in spans]
            assert max(sizes) - min(sizes) <= 1


def test_shard_batch_weights_sum_to_one_and_pad_empty_ranks():
    batch, sizes = [7, 3, 5], [1.0] * 3 + [4.0] + [1.0] * 3 + [2.0] + [1.0, 1.0]
    shares = [dist.shard_batch(batch, sizes, r, 2) for r in range(2)]
    assert [idx for idx, _ in shares] == [[7, 3], [5]]
    # by size: items 7 (2.0 s) and 3 (4.0 s) against 5 (1.0 s) -> 6/7 and 1/7
    assert shares[0][1] == pytest.approx(6 / 7) and shares[1][1] == pytest.approx(1 / 7)
    by_count = [dist.shard_batch(batch, None, r, 2)[1] for r in range(2)]
    assert by_count == pytest.approx([2 / 3, 1 / 3])
    # a 1-item batch on 3 ranks: ranks 1 and 2 repeat the item with weight 0
    assert [dist.shard_batch([4], None, r, 3) for r in range(3)] == [([4], 1.0), ([4], 0.0),
                                                                   ([4], 0.0)]


def test_env_world_reads_torchrun_variables_and_rejects_bad_ones():
    assert dist.env_world({}) == dist.WorldInfo(0, 1, 0)
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
           "MASTER_PORT": "1"}
    assert dist.env_world(env) == dist.WorldInfo(1, 2, 1)
    with pytest.raises(ConfigError, match="MASTER_PORT"):
        dist.env_world({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ConfigError, match="RANK=2, WORLD_SIZE=2"):
        dist.env_world({**env, "RANK": "2"})
    with pytest.raises(ConfigError, match="integers"):
        dist.env_world({**env, "WORLD_SIZE": "two"})


def test_single_process_is_untouched():
    module = nn.Linear(2, 2)
    assert not dist.is_initialized() and dist.is_main()
    assert dist.wrap_ddp(module) is module
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    x = torch.tensor([1.5, 2.0])
    assert torch.equal(dist.all_reduce_sum(x), x)
    with dist.main_first():
        pass
    state = torch.get_rng_state()
    dist.seed_rank(0, 5)  # rank 0 keeps its random stream
    assert torch.equal(torch.get_rng_state(), state)


# --- 2 processes on gloo ------------------------------------------------------------------

def test_downstream_two_processes_match_one(data_dir, tmp_path):
    base = [f"data_dir={data_dir}", *COMMON, *KS]
    run_cli([*base, f"out_dir={tmp_path / 'one'}"])
    proc = run_cli([*base, f"out_dir={tmp_path / 'two'}"], nproc=2)
    assert proc.stdout.count("| fbank |") == 1, "the table must be printed once (rank 0)"

    one, two = tmp_path / "one" / "runs", tmp_path / "two" / "runs"
    r1 = json.loads(only("**/result.json", one).read_text())
    r2 = json.loads(only("**/result.json", two).read_text())
    assert (r1["dev_value"], r1["test_value"]) == (r2["dev_value"], r2["test_value"])
    assert r1["run_id"] == r2["run_id"]  # the world size is not part of the cell
    w1 = load_file(only("**/best.safetensors", one))
    w2 = load_file(only("**/best.safetensors", two))
    assert_weights_close(w1, w2, atol=1e-5)
    for run in (one, two):  # both took 6 optimizer steps and kept the last probe's state
        last = only("**/last", run)
        assert json.loads((last / "state.json").read_text())["step"] == 6
        optim = torch.load(last / "optimizer.pt", weights_only=True)["optimizer"]
        assert {float(s["step"]) for s in optim["state"].values()} == {6.0}
    assert_weights_close(load_file(only("**/last/model.safetensors", one)),
                         load_file(only("**/last/model.safetensors", two)), atol=1e-5)
    # one leaderboard row, written by rank 0 only
    import sqlite3

    with sqlite3.connect(tmp_path / "two" / "leaderboard.sqlite") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1


def test_pretrain_two_processes_match_one_and_resume_in_one(make_cfg, tiny_corpus, data_dir,
                                                            tmp_path):
    cpu = torch.device("cpu")
    ref_cfg = make_cfg(*APC, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'one'}")
    reference = load_file(pretrain(ref_cfg, tiny_corpus, cpu))

    # (b) 4 steps on 2 processes
    cli = ["mode=pretrain", f"data_dir={data_dir}", *COMMON, *APC]
    run_cli([*cli, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'two'}"], nproc=2)
    two = load_file(only("pretrain/apc/*/*/model.safetensors", tmp_path / "two"))
    # the global batch's loss is a frame average; ranks weight their share by audio
    # seconds, which differs from APC's count of predicted frames by < 1 % per batch (on
    # the format-4 tiny corpus the weights then differ by up to 1.3e-3 after 4 steps)
    assert_weights_close(reference, two, atol=2e-3)

    # (c) 2 steps on 2 processes, then resumed to 4 steps in this one process
    run_cli([*cli, "upstream.pretrain.steps=2", f"out_dir={tmp_path / 'mixed'}"], nproc=2)
    resume_cfg = make_cfg(*APC, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'mixed'}")
    last = pretrain_dir(resume_cfg, tiny_corpus) / "last" / "state.json"
    assert json.loads(last.read_text())["step"] == 2
    resumed = load_file(pretrain(resume_cfg, tiny_corpus, cpu))
    assert json.loads(last.read_text())["step"] == 4
    # its first two steps were shared by seconds, as in (b): 1.3e-3 on the format-4 tiny corpus
    assert_weights_close(reference, resumed, atol=2e-3)
    summary = json.loads((last.parent.parent / "summary.json").read_text())
    assert summary["steps"] == 4


# HuBERT's k-means targets (fitted by rank 0, loaded by rank 1) and data2vec's EMA teacher
# must stay identical on every rank: each rank hashes its whole upstream state after every
# step (this file is also the torchrun worker, see the __main__ block)
SMALL_TRANSFORMER = ["upstream.hidden_size=32", "upstream.num_layers=1", "upstream.num_heads=2",
                     "upstream.ff_size=64", "upstream.conv_dim=32", "upstream.conv_pos_kernel=16",
                     "upstream.conv_pos_groups=4", "upstream.pretrain.batch_seconds=10",
                     "upstream.pretrain.steps=3"]
HOOKED = {"hubert": ["upstream.frontend=fbank", "upstream.num_clusters=8",  # + GlobalCMVN
                     "upstream.kmeans_n_init=1", "upstream.final_dim=16"],
          "data2vec": ["upstream.top_k=1"]}


@pytest.mark.parametrize("name", sorted(HOOKED))
def test_hooks_keep_ranks_identical(name, data_dir, tmp_path):
    if not TORCHRUN.is_file():
        pytest.skip("torchrun not installed next to this python")
    env = {k: v for k, v in os.environ.items() if k not in dist.ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [str(TORCHRUN), "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", __file__, name, str(data_dir), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hashes = [json.loads((tmp_path / f"hashes{r}.json").read_text()) for r in range(2)]
    assert len(hashes[0]) == 3 and hashes[0] == hashes[1]
    assert len(set(hashes[0])) == 3  # the weights did change every step
    if name == "hubert":
        assert proc.stdout.count("reusing k-means targets") == 1  # rank 1 loaded rank 0's


def _hash_every_step(name: str, data_dir: str, out: str) -> None:
    """torchrun worker: pre-train 3 steps, writing this rank's per-step state hashes."""
    from hydra import compose, initialize_config_dir

    import speechssl.pretrain as pt
    from speechssl.checkpoint import state_hash
    from speechssl.config import RECIPES  # stores the class defaults the recipes compose on
    from speechssl.data.corpus import load_corpus

    dist.init("cpu")
    torch.set_num_threads(1)
    hashes: list[str] = []
    build = pt.build_from_config

    def build_recording(cfg_up):
        model = build(cfg_up)
        after = model.after_step

        def after_step(step: int) -> None:
            after(step)
            hashes.append(state_hash(model))  # student, teacher, centroids, buffers

        model.after_step = after_step
        return model

    pt.build_from_config = build_recording
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        cfg = compose("config", overrides=[f"upstream={name}", f"data_dir={data_dir}",
                                           f"out_dir={out}", *COMMON, *SMALL_TRANSFORMER,
                                           *HOOKED[name]])
    pt.pretrain(cfg, load_corpus(cfg.corpus, cfg.data_dir, progress=False), torch.device("cpu"))
    Path(out, f"hashes{dist.world().rank}.json").write_text(json.dumps(hashes))
    dist.cleanup()


if __name__ == "__main__":
    _hash_every_step(*sys.argv[1:4])
