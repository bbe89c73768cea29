"""Tuning modes (speechssl/tuning.py, speechssl/nn/peft.py, the transformer hooks): what each
mode trains and what it leaves bit-identical, the zero-init and frame-count properties, the
parameter counts by hand, clear errors, the on-the-fly frozen path against the cache, one
speech and the text cells end to end, mode=compare, resume and evaluate, and torchrun."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

import speechssl.train as train_mod
from speechssl import report, store, tuning
from speechssl.errors import ConfigError
from speechssl.nn.transformer import TransformerEncoder
from speechssl.train import evaluate_cell, run_dir_for, train_cell
from speechssl.upstream.bert import BERT
from speechssl.upstream.gpt import GPT

# bert: 32 hidden, 2 layers, 2 heads, 64 feed-forward; pre-trained 10 steps (module fixture)
SIZE = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64, "vocab_size": 1200}
ARCH = ["upstream=bert", *(f"upstream.{k}={v}" for k, v in SIZE.items()),
        "upstream.pretrain.steps=10", "upstream.pretrain.batch_tokens=600",
        "upstream.pretrain.warmup_steps=2"]
SST2 = ["downstream=sst2", "downstream.optim.max_steps=4", "downstream.optim.eval_every=2",
        "downstream.optim.patience=10"]
SMALL = {"adapter": {"bottleneck": 8}, "lora": {"rank": 4},
         "prefix": {"length": 5, "reparam_hidden": 16}, "prompt": {"length": 5}}


def small(mode: str) -> list[str]:
    """SMALL's settings of ``mode`` as command-line overrides."""
    return [f"tuning.{k}={v}" for k, v in SMALL.get(mode, {}).items()]


def tc(mode: str, **opts):
    """The tuning config of ``mode``: its recipe with ``opts`` overridden."""
    from conftest import RECIPES

    return OmegaConf.merge(OmegaConf.load(RECIPES / "tuning" / f"{mode}.yaml"), opts)


def bert(**extra) -> BERT:
    torch.manual_seed(0)
    return BERT(**{**SIZE, "dropout": 0.0, **extra}).eval().requires_grad_(False)


def tokens(B: int = 2, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(5, 1200, (B, T), generator=g), torch.tensor([T, T - 3][:B])


def hand_count(mode: str, D: int = 32, L: int = 2) -> int:
    """Trainable upstream parameters of SMALL's settings on the 2-layer, 32-wide encoder."""
    if mode == "adapter":  # down D*8+8, up 8*D+D, and the two layer norms (2 x 2D) per layer
        return L * ((D * 8 + 8) + (8 * D + D) + 2 * 2 * D)
    if mode == "lora":  # q/k/v: 3 A (4 x D) + B (3D x 4); out: A (4 x D) + B (D x 4)
        return L * ((3 * 4 * D + 3 * D * 4) + (4 * D + D * 4))
    if mode == "prefix":  # embedding 5 x D, MLP D -> 16 -> L * 2 * D
        return 5 * D + (D * 16 + 16) + (16 * L * 2 * D + L * 2 * D)
    if mode == "prompt":
        return 5 * D
    # full / scratch: embeddings (tokens, 256 positions, 2 segments, layer norm) and the
    # layers (q/k/v, out, feed-forward, two layer norms); not the MLM, pooler, pair heads
    embed = 1200 * D + 256 * D + 2 * D + 2 * D
    layer = (D * 3 * D + 3 * D) + (D * D + D) + (D * 64 + 64) + (64 * D + D) + 2 * 2 * D
    return embed + L * layer


# --------------------------------------------------------------------------- the layers

@pytest.mark.parametrize("mode", ["adapter", "lora"])
def test_zero_init_modes_reproduce_the_frozen_model_exactly(mode):
    ids, lengths = tokens()
    frozen = bert()(ids, lengths).hidden_states
    model = bert()
    trained = tuning.apply_tuning(model, tc(mode), "bert")
    assert trained and all(p.requires_grad for p in trained.values())
    tuned = model(ids, lengths).hidden_states
    assert len(tuned) == len(frozen)
    assert all(torch.equal(a, b) for a, b in zip(tuned, frozen, strict=True))


def test_prompt_is_prepended_to_the_input_and_stripped_from_every_output():
    torch.manual_seed(0)
    enc = TransformerEncoder(32, 2, 2, 64, dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(2, 6, 32)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    tuning.install(enc, "prompt", {"length": 5, "init_std": 1.0})
    outs = enc(x, pad)
    assert [o.shape for o in outs] == [(2, 6, 32)] * 2  # frame count unchanged
    prompt = enc.prompt.detach()
    enc.prompt = None  # the same encoder without the hook, on the prompt-prefixed input
    manual = enc(torch.cat([prompt.expand(2, 5, 32), x], 1),
                 torch.cat([torch.zeros(2, 5, dtype=torch.bool), pad], 1))
    for o, m in zip(outs, manual, strict=True):
        assert torch.allclose(o, m[:, 5:], atol=1e-6)
    for o, plain in zip(outs, enc(x, pad), strict=True):  # real tokens do attend to it
        assert not torch.allclose(o, plain, atol=1e-3)


@pytest.mark.parametrize("mode", ["prefix", "prompt"])
def test_prefix_and_prompt_keep_frame_counts_and_ignore_padding(mode):
    model = bert()
    tuning.apply_tuning(model, tc(mode, **{"length": 5}), "bert")
    ids, lengths = tokens(T=7)
    out = model(ids, lengths)
    assert torch.equal(out.lengths, lengths)
    assert all(h.shape[:2] == (2, 7) for h in out.hidden_states)
    # the short sequence alone (no padding) gives the same valid frames: padding is never
    # attended, the prefix/prompt always is
    alone = model(ids[1:, :4], lengths[1:])
    for h, a in zip(out.hidden_states, alone.hidden_states, strict=True):
        assert torch.allclose(h[1, :4], a[0], atol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "prompt", "lora"])
def test_tuned_gpt_stays_causal(mode):
    torch.manual_seed(0)
    model = GPT(**SIZE, dropout=0.0).eval()
    opts = {} if mode == "lora" else {"length": 5}
    tuning.apply_tuning(model, tc(mode, **opts), "gpt")
    if mode == "lora":  # B starts at zero: move it so the update is not a no-op
        for layer in model.encoder.layers:
            torch.nn.init.normal_(layer.attn.lora_qkv.B)
    ids, lengths = tokens(B=1, T=8)
    changed = ids.clone()
    changed[0, 5:] = 7
    a = model(ids, lengths).hidden_states[-1]
    b = model(changed, lengths).hidden_states[-1]
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)  # tokens < 5 never see tokens >= 5
    assert not torch.allclose(a[0, 5:], b[0, 5:])


def test_trainable_counts_match_the_hand_computed_ones():
    for mode in ("adapter", "lora", "prefix", "prompt", "full"):
        model = bert()
        trained = tuning.apply_tuning(model, tc(mode, **SMALL.get(mode, {})), "bert")
        assert sum(p.numel() for p in trained.values()) == hand_count(mode), mode
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        if mode == "full":  # what the features do not depend on stays frozen
            assert sorted(frozen) == ["mlm_bias", "mlm_transform.0.bias", "mlm_transform.0.weight",
                                      "mlm_transform.2.bias", "mlm_transform.2.weight",
                                      "pair_head.bias", "pair_head.weight", "pooler.0.bias",
                                      "pooler.0.weight"]
    without = tc("prefix", length=5, reparam_hidden=0)
    assert sum(p.numel() for p in tuning.apply_tuning(bert(), without, "bert").values()) \
        == 2 * 2 * 5 * 32  # L x (keys, values) x P x D


# --------------------------------------------------------------------------- errors

def test_unsupported_modes_and_bad_values_are_config_errors(make_cfg, tmp_path):
    from speechssl.config import check_values
    from speechssl.upstream.base import build_upstream

    apc = build_upstream("apc", hidden_size=16, num_layers=1)
    with pytest.raises(ConfigError, match=r"tuning=lora .* upstream 'apc' .* supports "
                                          r"tuning=frozen, full, scratch$"):
        tuning.check_supported(apc, "apc", "lora")
    with pytest.raises(ConfigError, match="upstream 'fbank' supports tuning=frozen$"):
        check_values(make_cfg("upstream=fbank", "tuning=full"))
    with pytest.raises(ConfigError, match="upstream 'apc'"):
        check_values(make_cfg("upstream=apc", "tuning=prefix"))
    with pytest.raises(ConfigError, match=r"tuning.rank=0 \(tuning=lora\) must be int >= 1"):
        check_values(make_cfg("upstream=bert", "tuning=lora", "tuning.rank=0"))
    with pytest.raises(ConfigError, match=r"tuning.dropout=1.5 .* in \[0, 1\)"):
        check_values(make_cfg("upstream=bert", "tuning=lora", "tuning.dropout=1.5"))
    with pytest.raises(ConfigError, match="tuning=prompt has no option 'rank'"):
        check_values(make_cfg("upstream=bert", "tuning=prompt", "+tuning.rank=4"))
    with pytest.raises(ConfigError, match="valid modes: frozen, full"):
        check_values(make_cfg("upstream=bert", "tuning=frozen", "tuning.name=bitfit"))
    with pytest.raises(ConfigError, match="downstream 'qbe' trains no probe"):
        check_values(make_cfg("upstream=bert", "downstream=qbe", "tuning=lora"))
    with pytest.raises(ConfigError, match="mode=compare"):
        check_values(make_cfg("upstream=mockingjay", "downstream=qbe", "mode=compare"))

    transformers = pytest.importorskip("transformers")
    root = tmp_path / "hf"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32)).save_pretrained(root)
    hf = build_upstream("hf", path=str(root))
    assert tuning.supported_modes(hf) == ("frozen", "full", "lora")  # lora: peft
    with pytest.raises(ConfigError, match=r"tuning=adapter .*peft has no bottleneck adapters.* "
                                          r"supports tuning=frozen, full, lora$"):
        tuning.check_supported(hf, "hf", "adapter")
    with pytest.raises(ConfigError, match="own checkpoint files"):
        tuning.check_supported(hf, "hf", "scratch")


# --------------------------------------------------------------------------- bookkeeping

def test_run_dirs_differ_per_tuning_and_frozen_keeps_its_directory(make_cfg):
    frozen = make_cfg("upstream=bert", "downstream=sst2")
    base = OmegaConf.to_container(frozen.downstream, resolve=True)
    del base["train_items"]  # null, the default: not part of the key (tests/test_train_items.py)
    del base["optim"]["lr_grid"]  # the grid an lr search draws from does not make the run
    from speechssl.runtime import config_hash

    # a frozen cell's directory is the one it had before tuning existed
    assert run_dir_for(frozen, "t", "sst2", "c").name == f"seed0-{config_hash(base, n=8)}"
    dirs = {run_dir_for(make_cfg("upstream=bert", "downstream=sst2", *o), "t", "sst2", "c")
            for o in ([], ["tuning=lora"], ["tuning=lora", "tuning.rank=4"], ["tuning=full"],
                      ["tuning=scratch"])}
    assert len(dirs) == 5
    other_grid = make_cfg("upstream=bert", "downstream=sst2", "downstream.optim.lr_grid=[0.5]")
    assert run_dir_for(other_grid, "t", "sst2", "c") == run_dir_for(frozen, "t", "sst2", "c")


def _row(tuning_mode, value, run_id, config_yaml=""):
    return {"run_id": run_id, "upstream": "bert", "weights_hash": "abc", "task": "sst2",
            "corpus": "synth-tiny-seed0", "metric": "accuracy", "higher_is_better": 1,
            "dev_value": value, "test_value": value, "seed": 0, "wall_time_s": 1.0,
            "tuning": tuning_mode, "config_yaml": config_yaml}


def test_leaderboard_shows_each_tuning_as_its_own_row(tmp_path):
    db = tmp_path / "lb.sqlite"
    lora = "downstream: {name: sst2}\ntuning: {name: lora, rank: %d}\n"
    store.record(db, _row("frozen", 60.0, "a"))
    store.record(db, _row("lora", 70.0, "b", lora % 8))
    store.record(db, _row("lora", 65.0, "c", lora % 4))  # a variant of the lora row
    store.record(db, _row("full", 80.0, "d"))
    table = report.markdown_table(store.rows(db))
    assert "| bert | 60.00 |" in table
    assert "| bert [full] | 80.00 |" in table
    assert "| bert [lora] | 70.00 (best on dev: tuning.rank=8) |" in table


# --------------------------------------------------------------------------- cells

@pytest.fixture(scope="module")
def bert_ckpt(data_dir, tmp_path_factory):
    """bert pre-trained 10 steps on the tiny corpus's text (shared by this module's cells)."""
    from conftest import RECIPES

    from speechssl.data.corpus import load_corpus
    from speechssl.pretrain import pretrain

    out = tmp_path_factory.mktemp("bert")
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        cfg = compose("config", overrides=[f"data_dir={data_dir}", f"out_dir={out}",
                                           "corpus.size=tiny", "progress=false", "device=cpu",
                                           *ARCH])
    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=False)
    return pretrain(cfg, corpus, torch.device("cpu"))


@pytest.fixture
def cells(monkeypatch):
    """Records every Cell that train_cell prepares, to look at its upstream afterwards."""
    seen = []
    real = train_mod.prepare_cell

    def keep(cfg):
        cell = real(cfg)
        seen.append(cell)
        return cell

    monkeypatch.setattr(train_mod, "prepare_cell", keep)
    return seen


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _frozen_and_trained_check(cell, before: dict, trained_names: set[str]) -> None:
    after = cell.upstream.state_dict()
    assert set(after) == set(before)
    for k, v in after.items():
        if k in trained_names:
            assert not torch.equal(v, before[k]), f"{k} should have trained"
        else:
            assert torch.equal(v, before[k]), f"{k} should be frozen (bit-identical)"


@pytest.mark.parametrize("mode", ["full", "scratch", "adapter", "lora", "prefix", "prompt"])
def test_text_cell_trains_exactly_the_modes_parameters(make_cfg, bert_ckpt, cells, mode):
    """bert x sst2 end to end: the row's tuning and trainable count, the frozen upstream state
    (parameters and buffers) bit-identical, every trained tensor moved."""
    snapshots = []
    real_train_probe = train_mod.train_probe

    def train_probe(cfg, cell, sources):  # the state after tuning was applied, before training
        snapshots.append(_snapshot(cell.upstream))
        return real_train_probe(cfg, cell, sources)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "train_probe", train_probe)
        row = train_cell(make_cfg(*ARCH, f"upstream.ckpt={bert_ckpt}", *SST2, f"tuning={mode}",
                                  *small(mode)))
    cell = cells[-1]
    probe = 3 + (32 * 2 + 2)  # featurizer (3 layers) + linear head over 2 classes
    assert row["tuning"] == mode and row["trainable_params"] == hand_count(mode) + probe
    _frozen_and_trained_check(cell, snapshots[0], set(cell.tuned))
    kept = load_file(f"{row['run_dir']}/best.safetensors")  # the checkpoint holds them
    assert {k for k in kept if k.startswith("upstream.")} == {
        "upstream." + n.replace(".", "/") for n in cell.tuned}


def test_mockingjay_lora_cell_end_to_end(make_cfg, cells):
    """Speech: mockingjay x ks with LoRA; global CMVN statistics (buffers) stay as pre-trained
    while the upstream runs in train mode."""
    snapshots = []
    real_train_probe = train_mod.train_probe

    def train_probe(cfg, cell, sources):
        snapshots.append(_snapshot(cell.upstream))
        return real_train_probe(cfg, cell, sources)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "train_probe", train_probe)
        row = train_cell(make_cfg(
            "upstream=mockingjay", "upstream.hidden_size=32", "upstream.num_layers=2",
            "upstream.num_heads=2", "upstream.ff_size=64", "upstream.cmvn=global",
            "upstream.pretrain.steps=2", "upstream.pretrain.batch_seconds=10",
            "upstream.pretrain.warmup_steps=1", "downstream=ks", "downstream.optim.max_steps=3",
            "downstream.optim.eval_every=3", "downstream.optim.batch_seconds=8",
            "tuning=lora", "tuning.rank=2"))
    cell = cells[-1]
    assert row["tuning"] == "lora" and 0.0 <= row["test_value"] <= 100.0
    # per layer: q/k/v 3 x (2 x 32) + 96 x 2, out 2 x 32 + 32 x 2; featurizer 3 layers;
    # head: linear 32 -> number of keyword classes
    classes = len(cell.task.classes)
    assert row["trainable_params"] == 2 * (192 + 192 + 128) + 3 + 32 * classes + classes
    assert any("global_cmvn" in k for k in snapshots[0])
    _frozen_and_trained_check(cell, snapshots[0], set(cell.tuned))


@pytest.mark.parametrize("task", ["pr", "ks"])
def test_cache_false_gives_the_cached_result(make_cfg, capsys, task):
    """Frozen fbank on the fly (the s3prl way) against the feature cache: batches count
    seconds of audio on both paths and the features are the same fp16 values. KS's
    mean-pool probe reads pooled vectors either way (kept in memory with cache=false)."""
    args = ["upstream=fbank", f"downstream={task}", "downstream.optim.max_steps=12",
            "downstream.optim.eval_every=6", "downstream.optim.batch_seconds=32"]
    cached = train_cell(make_cfg(*args))
    assert "runs on every batch" not in capsys.readouterr().out
    live = train_cell(make_cfg(*args, "++cache=false", "force=true"))
    out = capsys.readouterr().out
    if task == "pr":
        assert "fbank runs on every batch of train, dev, test (not cached)" in out
    else:
        assert "runs on every batch" not in out and "mean over frames" in out
    assert live["run_id"] == cached["run_id"]  # the same cell: cache only changes the path
    assert (live["dev_value"], live["test_value"]) == (cached["dev_value"], cached["test_value"])
    assert live["metrics_json"] == cached["metrics_json"]


def test_compare_writes_its_png_and_two_rows(make_cfg, bert_ckpt, capsys):
    from speechssl.compare import compare

    cfg = make_cfg(*ARCH, f"upstream.ckpt={bert_ckpt}", *SST2, "mode=compare")
    path = compare(cfg)
    assert path is not None and re.fullmatch(r"bert-sst2-[0-9a-f]{8}\.png", path.name)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.parent.name == "compare"
    rows = store.rows(cfg.leaderboard)
    assert sorted(r["tuning"] for r in rows) == ["full", "scratch"]
    out = capsys.readouterr().out
    assert "| pre-trained | full |" in out and "| random init | scratch |" in out
    table = report.markdown_table(rows)
    assert "| bert [full] |" in table and "| bert [scratch] |" in table


def test_tuned_cell_resumes_and_evaluates_from_its_checkpoints(make_cfg, bert_ckpt, tmp_path,
                                                               monkeypatch, capsys):
    args = [*ARCH, f"upstream.ckpt={bert_ckpt}", "downstream=sst2",
            "downstream.optim.max_steps=6", "downstream.optim.eval_every=2",
            "downstream.optim.patience=10", "tuning=adapter", "tuning.bottleneck=4"]
    reference = train_cell(make_cfg(*args, f"out_dir={tmp_path / 'a'}"))

    real_evaluate, calls = train_mod.evaluate, []

    def dies_on_second_evaluation(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # at step 4, before its checkpoint: the last one is step 2
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(train_mod, "evaluate", dies_on_second_evaluation)
    cfg = make_cfg(*args, f"out_dir={tmp_path / 'b'}")
    with pytest.raises(KeyboardInterrupt):
        train_cell(cfg)
    monkeypatch.setattr(train_mod, "evaluate", real_evaluate)
    resumed = train_cell(cfg)
    assert "resuming" in capsys.readouterr().out
    assert resumed["metrics_json"] == reference["metrics_json"]
    # evaluate_cell rebuilds the adapters and loads them from best.safetensors
    assert evaluate_cell(cfg)["accuracy"] == pytest.approx(resumed["test_value"])


@pytest.mark.slow
def test_lora_under_torchrun_matches_one_process(data_dir, bert_ckpt, tmp_path):
    from test_distributed import COMMON, only, run_cli

    base = [f"data_dir={data_dir}", *COMMON, *ARCH, "upstream.dropout=0",
            f"upstream.ckpt={bert_ckpt}", *SST2, "tuning=lora", "tuning.rank=2",
            "tuning.dropout=0", "downstream.dropout=0"]
    run_cli([*base, f"out_dir={tmp_path / 'one'}"])
    run_cli([*base, f"out_dir={tmp_path / 'two'}"], nproc=2)
    r1 = json.loads(only("**/result.json", tmp_path / "one" / "runs").read_text())
    r2 = json.loads(only("**/result.json", tmp_path / "two" / "runs").read_text())
    assert r1["trainable_params"] == r2["trainable_params"]
    w1 = load_file(only("**/best.safetensors", tmp_path / "one"))
    w2 = load_file(only("**/best.safetensors", tmp_path / "two"))
    assert w1.keys() == w2.keys() and any(k.startswith("upstream.") for k in w1)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k
    with sqlite3.connect(tmp_path / "two" / "leaderboard.sqlite") as db:
        assert db.execute("select tuning from runs").fetchall() == [("lora",)]
