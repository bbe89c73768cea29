"""Files the project wrote, found damaged, and real corpora with bad layouts (issue 20, parts
4 to 6): each fault is one line naming the file and what to do (exit status 2 through the
command line, no traceback), nothing is recorded or overwritten; a deleted synthesized WAV
is rendered again, the same bytes; the report keeps every corpus's curves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speechssl import store
from speechssl.checkpoint import load_training_state, load_weights, save_weights
from speechssl.cli import run
from speechssl.config import RECIPES
from speechssl.data.corpus import load_corpus
from speechssl.errors import ConfigError, ManifestError, SpeechSSLError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from test_corpora import recipe, speech_commands_tree, text  # noqa: E402

BUDGET = ["downstream.optim.max_steps=4", "downstream.optim.eval_every=2"]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "progress=false", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The message of a run that stopped on a bad input: exit 2, one line, no traceback."""
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0].removeprefix("error: ")


def config(data_dir: Path, out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        return compose("config", overrides=[
            f"data_dir={data_dir}", f"out_dir={out_dir}", "corpus.size=tiny", "progress=false",
            "device=cpu", *overrides])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha(p) for p in sorted(d.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the result store


def _row(run_id: str) -> dict:
    return {"run_id": run_id, "upstream": "fbank", "weights_hash": "abc", "task": "ks",
            "corpus": "synth-tiny-seed0", "metric": "accuracy", "higher_is_better": 1,
            "dev_value": 50.0, "test_value": 50.0, "seed": 0, "wall_time_s": 1.0,
            "config_yaml": "x" * 3000}


def _malformed(path: Path) -> None:
    """A real store whose fourth page was overwritten: SQLite reports it malformed."""
    for i in range(20):
        store.record(path, _row(f"r{i}"))
    data = bytearray(path.read_bytes())
    assert len(data) > 5 * 4096  # WAL checkpointed into the file when the last one closed
    data[3 * 4096:3 * 4096 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.commit()
    conn.close()


STORE_FAULTS = {
    "not-sqlite": (lambda p: p.write_bytes(b"this is not a database" * 100),
                   "the result store is damaged or not an SQLite file (file is not a database): "
                   "restore it from a backup, or move it aside to start a new store"),
    "malformed": (_malformed,
                  "the result store is damaged or not an SQLite file (database disk image is "
                  "malformed): restore it from a backup, or move it aside to start a new store"),
    "foreign": (_foreign, "an SQLite file without speechssl's runs table (another program's "
                          "database?): point leaderboard= at another file"),
}


@contextmanager
def read_only(path: Path):
    """``path`` read-only for this process: chmod, and as root (whom permissions do not stop)
    the immutable attribute too."""
    mode = path.stat().st_mode
    os.chmod(path, 0o555 if path.is_dir() else 0o444)
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        os.chmod(path, mode)
        pytest.skip("running as root without chattr +i: no file is read-only for root")
    try:
        yield
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        os.chmod(path, mode)


@pytest.mark.parametrize("fault", sorted(STORE_FAULTS))
def test_damaged_store_stops_before_training(fault, data_dir, tmp_path):
    make, why = STORE_FAULTS[fault]
    lb, out = tmp_path / "lb.sqlite", tmp_path / "out"
    make(lb)
    before = sha(lb)
    cfg = config(data_dir, out, "upstream=fbank", "downstream=ks", f"leaderboard={lb}", *BUDGET)
    compare = config(data_dir, out, "mode=compare", "upstream=apc", "downstream=ks",
                     f"leaderboard={lb}", *BUDGET)
    for mode_cfg in (cfg, OmegaConf.merge(cfg, {"mode": "leaderboard"}), compare):
        with pytest.raises(ConfigError) as err:
            run(mode_cfg)
        assert str(err.value) == f"leaderboard={lb}: {why}"
    assert sha(lb) == before  # checked, not touched
    assert not out.exists()  # nothing trained, extracted or reported


def test_store_that_is_a_directory_is_named(tmp_path):
    lb = tmp_path / "lb.sqlite"
    lb.mkdir()
    for check in (store.check_store, store.rows):  # config validation names it first in a run
        with pytest.raises(ConfigError) as err:
            check(lb)
        assert str(err.value) == (f"leaderboard={lb}: a directory, not a result store file: "
                                  "point leaderboard= at a file")
    assert not any(lb.iterdir())


@pytest.mark.parametrize("what", ["store", "directory"])
def test_read_only_store_is_named_and_still_read(what, data_dir, tmp_path):
    lb, out = tmp_path / "lb" / "lb.sqlite", tmp_path / "out"
    store.record(lb, _row("r0"))
    before = sha(lb)
    locked = lb if what == "store" else lb.parent
    where = ("the result store" if what == "store" else
             f"its directory {locked} (where SQLite keeps the store's WAL files)")
    cfg = config(data_dir, out, "upstream=fbank", "downstream=ks", f"leaderboard={lb}", *BUDGET)
    with read_only(locked):
        with pytest.raises(ConfigError) as err:
            run(cfg)
        assert str(err.value) == (f"leaderboard={lb}: {where} is read-only: make it writable "
                                  f"(chmod u+w {locked}) or point leaderboard= at another file")
        assert not (out / "runs").exists()
        run(OmegaConf.merge(cfg, {"mode": "leaderboard"}))  # reading needs no write
        assert "| fbank |" in (out / "leaderboard" / "leaderboard.md").read_text()
    assert sha(lb) == before


def test_damaged_store_through_the_command_line(data_dir, tmp_path):
    lb, out = tmp_path / "lb.sqlite", tmp_path / "out"
    lb.write_bytes(b"this is not a database" * 100)
    res = cli("upstream=fbank", "downstream=ks", "corpus.size=tiny", f"data_dir={data_dir}",
              f"out_dir={out}", f"leaderboard={lb}", *BUDGET)
    assert one_error_line(res) == f"leaderboard={lb}: {STORE_FAULTS['not-sqlite'][1]}"
    assert lb.read_bytes() == b"this is not a database" * 100
    assert not (out / "runs").exists() and not (out / "features").exists()


# ---------------------------------------------------------------- a run's last checkpoint


@pytest.fixture(scope="module")
def interrupted(data_dir, tmp_path_factory) -> Path:
    """The out_dir of a probe run killed at its second dev evaluation: ``last`` at step 2."""
    import speechssl.train as train_mod
    from speechssl.train import train_cell

    out = tmp_path_factory.mktemp("interrupted")
    real, calls = train_mod.evaluate, []

    def dies_on_second_evaluation(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    train_mod.evaluate = dies_on_second_evaluation
    try:
        with pytest.raises(KeyboardInterrupt):
            train_cell(config(data_dir, out, "upstream=fbank", "downstream=ks", *BUDGET))
    finally:
        train_mod.evaluate = real
    (last,) = out.glob("runs/**/last")
    assert json.loads((last / "state.json").read_text())["step"] == 2
    return out


def _last(out: Path) -> Path:
    (last,) = out.glob("runs/**/last")
    return last


STATE_FAULTS = {
    "state-json-cut": ("state.json", lambda p: p.write_text('{"step": 2, "epo'),
                       "Unterminated string starting at: line 1 column 13 (char 12)"),
    "state-json-no-step": ("state.json", lambda p: p.write_text('{"epoch": 0, "pos": 2}'),
                           "'step' is None, not a count"),
    "optimizer-garbage": ("optimizer.pt", lambda p: p.write_bytes(b"garbage" * 10),
                          "not a weights-only torch file"),
    "optimizer-cut": ("optimizer.pt", lambda p: p.write_bytes(p.read_bytes()[:200]),
                      "PytorchStreamReader failed reading zip archive: failed finding central "
                      "directory"),
    "optimizer-missing": ("optimizer.pt", lambda p: p.unlink(), "the file is missing"),
    "model-cut": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]),
                  "not a readable safetensors checkpoint (Error while deserializing header: "
                  "invalid header length)"),
}


def _damaged_message(last: Path, name: str, why: str) -> str:
    return (f"{last / name}: damaged training checkpoint ({why}): delete {last} to restart this "
            "run from its first step (or force=true for a probe run)")


@pytest.mark.parametrize("fault", sorted(STATE_FAULTS))
def test_damaged_training_state_is_named(fault, interrupted, data_dir, tmp_path):
    from speechssl.train import train_cell

    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    name, damage, why = STATE_FAULTS[fault]
    last = _last(out)
    damage(last / name)
    before = tree(last)
    cfg = config(data_dir, out, "upstream=fbank", "downstream=ks", *BUDGET)
    with pytest.raises(SpeechSSLError) as err:
        train_cell(cfg)
    assert str(err.value) == _damaged_message(last, name, why)
    assert tree(last) == before and not (last.parent / "result.json").exists()
    assert not Path(cfg.leaderboard).exists()


def test_damaged_training_state_through_the_command_line(interrupted, data_dir, tmp_path):
    from speechssl.train import train_cell

    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    last = _last(out)
    (last / "state.json").write_text("{")
    res = cli("upstream=fbank", "downstream=ks", "corpus.size=tiny", f"data_dir={data_dir}",
              f"out_dir={out}", *BUDGET)
    assert one_error_line(res) == _damaged_message(
        last, "state.json", "Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)")
    assert not (out / "leaderboard.sqlite").exists()
    shutil.rmtree(last)  # what the message says to do: the run starts over and finishes
    row = train_cell(config(data_dir, out, "upstream=fbank", "downstream=ks", *BUDGET))
    assert [r["run_id"] for r in store.rows(out / "leaderboard.sqlite")] == [row["run_id"]]


def _other_optimizer(last: Path) -> None:
    """optimizer.pt of another run: one parameter tensor where this run has two."""
    model = torch.nn.Linear(3, 2, bias=False)
    torch.save({"optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
                "torch_rng": torch.get_rng_state()}, last / "optimizer.pt")


@pytest.mark.parametrize("damage,why", [
    (lambda last: (last / "optimizer.pt").write_bytes(b""), "the file is empty or cut short"),
    (_other_optimizer, "its optimizer state does not fit this run's parameters"),
], ids=["empty", "another-run"])
def test_damaged_training_state_leaves_the_model_as_it_was(damage, why, tmp_path):
    from speechssl.checkpoint import save_training_state

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    last = tmp_path / "last"
    save_training_state(last, model, opt, {"step": 1, "epoch": 0, "pos": 1})
    damage(last)
    fresh = torch.nn.Linear(3, 2)
    weights = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(SpeechSSLError) as err:
        load_training_state(last, fresh, torch.optim.AdamW(fresh.parameters()))
    assert str(err.value) == _damaged_message(last, "optimizer.pt", why)
    assert all(torch.equal(v, weights[k]) for k, v in fresh.state_dict().items())


# ---------------------------------------------------------------- upstream.ckpt


@pytest.fixture(scope="module")
def apc_checkpoints(tmp_path_factory) -> dict[str, Path]:
    from speechssl.upstream.base import build_upstream

    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, kind, opts in (("apc32", "apc", {"hidden_size": 32}),
                             ("tera", "tera", {"hidden_size": 32, "num_heads": 2,
                                               "ff_size": 64})):
        torch.manual_seed(0)
        save_weights(d / f"{name}.safetensors", build_upstream(kind, **opts),
                     {"upstream": kind, "options": json.dumps(opts)})
        out[name] = d / f"{name}.safetensors"
    cut = d / "cut.safetensors"
    cut.write_bytes(out["apc32"].read_bytes()[:300])
    out["cut"] = cut
    return out


CKPT_FAULTS = {
    "other-size": ("apc32", "weights do not fit APC (the file holds upstream 'apc'): tensor "
                   "'rnns.0.weight_ih_l0' is [96, 80] in the file, [192, 80] in the model (and "
                   "12 more differences)"),
    "other-architecture": ("tera", "weights do not fit APC (the file holds upstream 'tera'): "
                           "tensor '{first}' of the model is not in the file (and {more} more "
                           "differences)"),
    "cut": ("cut", "not a readable safetensors checkpoint (Error while deserializing header: "
            "invalid header length)"),
}


@pytest.mark.parametrize("fault", sorted(CKPT_FAULTS))
def test_upstream_ckpt_that_does_not_fit_is_one_line(fault, apc_checkpoints, tmp_path):
    from speechssl.upstream.base import build_upstream

    name, why = CKPT_FAULTS[fault]
    path = apc_checkpoints[name]
    model = build_upstream("apc", hidden_size=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if "{first}" in why:
        from safetensors.torch import load_file

        file_keys = set(load_file(str(path)))
        missing = [k for k in model.state_dict() if k not in file_keys]
        extra = [k for k in file_keys if k not in model.state_dict()]
        why = why.format(first=missing[0], more=len(missing) + len(extra) - 1)
    with pytest.raises(SpeechSSLError) as err:
        load_weights(path, model)
    assert str(err.value) == f"{path}: {why}"
    assert "\n" not in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_upstream_ckpt_of_another_architecture_through_the_command_line(
        apc_checkpoints, data_dir, tmp_path):
    path = apc_checkpoints["tera"]
    res = cli("upstream=apc", "upstream.hidden_size=64", f"upstream.ckpt={path}",
              "downstream=ks", "corpus.size=tiny", f"data_dir={data_dir}",
              f"out_dir={tmp_path}", *BUDGET)
    message = one_error_line(res)  # this runtime check, or the earlier one at validation
    assert str(path) in message and "tera" in message
    assert not (tmp_path / "leaderboard.sqlite").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the synthesized corpus


@pytest.fixture
def synth_copy(data_dir, tmp_path) -> Path:
    """A copy of the session's tiny corpus (and its text twin) as data_dir/synth/..."""
    shutil.copytree(data_dir / "synth", tmp_path / "data" / "synth")
    return tmp_path / "data" / "synth" / "synth-tiny-seed0"


SYNTH_FAULTS = {
    "deleted": (["wav/ks/dev/ks-dev-000003.wav"], lambda p: p.unlink()),
    "cut-short": (["wav/asr/train/asr-train-000001.wav"],
                  lambda p: p.write_bytes(p.read_bytes()[:1000])),
    "four-deleted": ([f"wav/sid/test/sid-test-00000{i}.wav" for i in range(4)],
                     lambda p: p.unlink()),
}


@pytest.mark.parametrize("fault", sorted(SYNTH_FAULTS))
def test_damaged_synth_wav_is_rendered_again(fault, synth_copy, capsys):
    from speechssl.data.synth import ensure_corpus

    rels, damage = SYNTH_FAULTS[fault]
    before = tree(synth_copy)
    for rel in rels:
        damage(synth_copy / rel)
    assert ensure_corpus(synth_copy.parents[0], "tiny", 0, progress=False) == synth_copy
    shown = ", ".join(sorted(rels)[:3]) + (", ..." if len(rels) > 3 else "")
    n = f"{len(rels)} audio file{'s' * (len(rels) > 1)}"
    assert capsys.readouterr().err == (f"[synth] {synth_copy}: {n} missing or damaged "
                                       f"({shown}): rendered again, the same bytes\n")
    assert tree(synth_copy) == before  # every file, byte for byte
    assert not list(synth_copy.parent.glob("*.repair-*"))


def test_synth_mode_restores_a_deleted_wav(synth_copy, tmp_path):
    wav = synth_copy / "wav" / "ks" / "test" / "ks-test-000005.wav"
    before = sha(wav)
    wav.unlink()
    res = cli("mode=synth", "corpus.size=tiny", f"data_dir={synth_copy.parents[1]}",
              f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert (f"[synth] {synth_copy}: 1 audio file missing or damaged "
            "(wav/ks/test/ks-test-000005.wav): rendered again, the same bytes") in res.stderr
    assert sha(wav) == before


def test_synth_item_that_renders_otherwise_regenerates_the_corpus(synth_copy, monkeypatch,
                                                                  capsys):
    """Another eSpeak NG gives other audio: the corpus is generated again as a whole (here
    the generation itself is the session's corpus copied: the point is the decision)."""
    from speechssl.data.synth import ensure_corpus
    from speechssl.data.synth import generate as gen

    original = synth_copy.parents[2] / "original"
    shutil.copytree(synth_copy, original)
    real = gen.render_item

    def other_espeak(item):
        res = real(item)
        res["frames"] += 1
        return res

    def generate_corpus(out_dir, *a, **k):
        shutil.copytree(original, out_dir)

    monkeypatch.setattr(gen, "render_item", other_espeak)
    monkeypatch.setattr(gen, "generate_corpus", generate_corpus)
    (synth_copy / "wav" / "er" / "dev" / "er-dev-000000.wav").unlink()
    ensure_corpus(synth_copy.parents[0], "tiny", 0, progress=False)
    assert capsys.readouterr().err == (
        f"[synth] {synth_copy}: 1 audio file missing or damaged (wav/er/dev/er-dev-000000.wav), "
        "and they do not render the same (another eSpeak NG?): generating the corpus again\n")
    assert tree(synth_copy) == tree(original)
    assert not [p for p in synth_copy.parent.iterdir() if ".partial-" in p.name or ".old-" in
                p.name or ".repair-" in p.name]


def test_missing_synth_manifest_regenerates(synth_copy, monkeypatch, capsys):
    from speechssl.data.synth import ensure_corpus
    from speechssl.data.synth import generate as gen

    made = []
    monkeypatch.setattr(gen, "generate_corpus",
                        lambda out_dir, *a, **k: made.append(out_dir) or shutil.copytree(
                            synth_copy.parents[1] / "keep", out_dir))
    shutil.copytree(synth_copy, synth_copy.parents[1] / "keep")
    (synth_copy / "manifests" / "sid" / "dev.jsonl").unlink()
    ensure_corpus(synth_copy.parents[0], "tiny", 0, progress=False)
    assert len(made) == 1 and (synth_copy / "manifests" / "sid" / "dev.jsonl").is_file()
    assert capsys.readouterr().err == (f"[synth] {synth_copy}: a manifest is missing or damaged: "
                                       "generating the corpus again (deterministic from the "
                                       "seed)\n")


# ---------------------------------------------------------------- Speech Commands


def test_speech_commands_with_a_relative_data_dir(tmp_path, monkeypatch):
    root = speech_commands_tree(tmp_path / "speech_commands_v0.01")
    monkeypatch.chdir(tmp_path)
    corpus = load_corpus(recipe("speech_commands", root=str(root)), "data", progress=False)
    for split in ("train", "dev"):
        silence = [it for it in corpus.items("ks", split) if it["label"] == "_silence_"]
        assert silence and all(Path(it["path"]).is_file() for it in silence)
        assert all(Path(it["path"]).is_relative_to(tmp_path / "data") for it in silence)
    monkeypatch.chdir(tmp_path / "speech_commands_v0.01")  # the cache reads from anywhere
    assert len(load_corpus(recipe("speech_commands", root=str(root)), tmp_path / "data",
                           progress=False).items("ks", "dev")) == 12 + 2


def test_speech_commands_dev_test_overlap_is_refused(tmp_path):
    root = speech_commands_tree(tmp_path / "sc")
    text(root / "testing_list.txt", "yes/spk05ab_nohash_0.wav\nno/spk04ab_nohash_0.wav\n"
                                    "yes/spk04ab_nohash_0.wav\n")
    want = (f"{root / 'validation_list.txt'} and {root / 'testing_list.txt'} both list 2 clips: "
            "yes/spk04ab_nohash_0.wav (lines 1 and 3), no/spk04ab_nohash_0.wav (lines 2 and 2); "
            "dev and test must not overlap: remove each from one of the two lists")
    with pytest.raises(ManifestError) as err:
        load_corpus(recipe("speech_commands", root=str(root)), tmp_path / "data", progress=False)
    assert str(err.value) == want
    assert not list((tmp_path / "data").glob("corpora/*/meta.json"))  # no cache was written
    res = cli("mode=synth", "corpus=speech_commands", f"corpus.root={root}",
              f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}")
    assert one_error_line(res) == want


@pytest.mark.parametrize("where", ["yes", "_background_noise_"])
def test_speech_commands_name_that_is_not_utf8(where, tmp_path):
    root = speech_commands_tree(tmp_path / "sc")
    bad = os.fsencode(root / where) + b"/caf\xe9_nohash_0.wav"
    shutil.copy(root / where / os.listdir(root / where)[0], bad)
    with pytest.raises(ManifestError) as err:
        load_corpus(recipe("speech_commands", root=str(root)), tmp_path / "data", progress=False)
    assert str(err.value) == (f"{root / where}: file name b'caf\\xe9_nohash_0.wav' is not "
                              "UTF-8: rename or remove it")
    (root / where / "notes\udcff.txt").write_text("not a clip: the layout ignores it")
    os.unlink(bad)
    assert load_corpus(recipe("speech_commands", root=str(root)), tmp_path / "data",
                       progress=False).items("ks", "train")


# ---------------------------------------------------------------- the report's curves


def test_report_keeps_curves_when_the_first_corpus_has_none(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from speechssl import report, score

    run_dir = tmp_path / "run"
    w = SummaryWriter(str(run_dir / "tb"))
    for step in range(1, 6):
        w.add_scalar("train/loss", 1.0 / step, step)
    w.add_scalar("dev/accuracy", 50.0, 5)
    w.close()
    rows = [{**_row("a/fbank/ks"), "corpus": "a-corpus", "run_dir": str(tmp_path / "none")},
            {**_row("b/fbank/ks"), "corpus": "b-corpus", "run_dir": str(run_dir)}]
    paths = report.write_report(rows, score.load_suite("superb"), tmp_path / "lb")
    assert [p.name for p in (tmp_path / "lb" / "curves").iterdir()] == ["b_fbank_ks.png"]
    page = paths["html"].read_text()
    assert page.count("training and dev curves (1 runs)") == 1
    assert page.index("corpus b-corpus") < page.index("training and dev curves")
