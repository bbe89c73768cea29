"""Identity of runs and caches (issue 20, part 1, and part 4's corpus meta.json): what a run,
a feature cache or a pre-training run was computed from is what keys it, so another corpus
copy, replaced audio, an edited source list or a second process never reuses a wrong
result, and a damaged meta.json is one line saying what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speechssl import store
from speechssl.cache import CachedFeatures
from speechssl.config import RECIPES
from speechssl.data.corpus import load_corpus
from speechssl.errors import ManifestError
from speechssl.lock import locked
from speechssl.train import train_cell
from speechssl.upstream.load import pretrain_dir

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat")
CELL = ["upstream=fbank", "downstream=ks", "downstream.optim.max_steps=10",
        "downstream.optim.eval_every=5"]


def wav(path: Path, seconds: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * 16000)).astype(np.float32)
    sf.write(path, x, 16000, subtype="PCM_16")
    return path


def speech_commands_tree(root: Path, seed: int = 0) -> Path:
    """12 words x 6 speakers (4 train, 1 dev, 1 test), a noise file; ``seed`` varies the
    audio, not the layout."""
    write_clips(root, seed)
    for s, name in ((4, "validation_list.txt"), (5, "testing_list.txt")):
        (root / name).write_text("".join(f"{w}/spk{s:02d}ab_nohash_0.wav\n" for w in WORDS))
    return root


def write_clips(root: Path, seed: int) -> None:
    """Every word clip (1 s) and the background noise, drawn from ``seed``."""
    for w, word in enumerate(WORDS):
        for s in range(6):
            wav(root / word / f"spk{s:02d}ab_nohash_0.wav", 1.0, seed + 100 * w + s)
    wav(root / "_background_noise_" / "white_noise.wav", 10.5, seed + 7)


def separate_test_set(tmp_path: Path) -> Path:
    test_root = tmp_path / "speech_commands_test_set_v0.01"
    for c, cls in enumerate(("yes", "stop", "_unknown_", "_silence_")):
        for i in range(2):
            wav(test_root / cls / f"t{i}_nohash_{i}.wav", 1.0, 900 + 10 * c + i)
    return test_root


def librispeech_tree(root: Path) -> Path:
    for sub, spk, n in (("train-clean-100", "19", 3), ("dev-clean", "84", 2),
                        ("test-clean", "61", 2)):
        chap = root / sub / spk / "198"
        for i in range(n):
            wav(chap / f"{spk}-198-{i:04d}.flac", 0.5 + 0.25 * i, 50 + i)
        (chap / f"{spk}-198.trans.txt").write_text(
            "".join(f"{spk}-198-{i:04d} HELLO WORLD\n" for i in range(n)))
    return root


def real(name: str, **over):
    """recipes/corpus/<name>.yaml with ``over`` set, as the command line would."""
    with initialize_config_dir(config_dir=str(RECIPES / "corpus"), version_base="1.3"):
        cfg = compose(name)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def sc_cell(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        return compose("config", overrides=[
            f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}", "progress=false",
            "device=cpu", "corpus=speech_commands", *CELL, *overrides])


def run_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "progress=false", "num_threads=1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


# ------------------------------------------------- a. runs keyed by what the corpus is


@pytest.mark.parametrize("other", ["root", "test_root"])
def test_another_copy_or_test_set_is_another_cell(tmp_path, capsys, other):
    """A second corpus.root (or corpus.test_root) on one out_dir is a second cell with its
    own run directory, score and leaderboard row, never "already done"."""
    first_root = speech_commands_tree(tmp_path / "sc_a")
    if other == "root":
        second = [f"corpus.root={speech_commands_tree(tmp_path / 'sc_b', seed=1)}"]
    else:
        second = [f"corpus.root={first_root}", f"corpus.test_root={separate_test_set(tmp_path)}"]
    one = train_cell(sc_cell(tmp_path, f"corpus.root={first_root}"))
    capsys.readouterr()
    two = train_cell(sc_cell(tmp_path, *second))
    assert "already done" not in capsys.readouterr().out
    assert one["run_dir"] != two["run_dir"]
    assert Path(one["run_dir"]).parent.parent == Path(two["run_dir"]).parent.parent  # same task
    for row in (one, two):
        assert json.loads((Path(row["run_dir"]) / "result.json").read_text()) == row
    rows = store.rows(tmp_path / "out" / "leaderboard.sqlite")
    assert sorted(r["run_dir"] for r in rows) == sorted([one["run_dir"], two["run_dir"]])
    assert {r["corpus"] for r in rows} == {"speech_commands"}  # the readable name
    # each is found again as itself
    again = train_cell(sc_cell(tmp_path, *second))
    assert "already done" in capsys.readouterr().out and again == two


def test_corpus_key_is_its_content(tmp_path, tiny_corpus):
    """The key changes with the manifests and options, not with a rescan that read the same
    files, nor with where the synthesized corpus lies."""
    root = speech_commands_tree(tmp_path / "sc")
    data = tmp_path / "data"
    first = load_corpus(real("speech_commands", root=str(root)), data, progress=False)
    rescanned = load_corpus(real("speech_commands", root=str(root), rescan=True), data,
                            progress=False)
    assert rescanned.key == first.key and first.key.startswith("speech_commands-")
    other = load_corpus(real("speech_commands", root=str(root), silence_dev_fraction=0.2),
                        data, progress=False)
    assert other.key != first.key
    moved = tmp_path / "moved" / tiny_corpus.root.name
    shutil.copytree(tiny_corpus.root / "manifests", moved / "manifests")
    (moved / "meta.json").write_text(json.dumps(tiny_corpus.meta))
    copy = type(tiny_corpus)(tiny_corpus.name, moved, tiny_corpus.meta, tiny_corpus.options)
    assert copy.key == tiny_corpus.key and tiny_corpus.key.startswith("synth-tiny-seed0-")
    (moved / "manifests" / "ks" / "test.jsonl").write_text(
        "\n".join((tiny_corpus.root / "manifests" / "ks" / "test.jsonl").read_text()
                  .splitlines()[:-1]) + "\n")
    edited = type(tiny_corpus)(tiny_corpus.name, moved, tiny_corpus.meta, tiny_corpus.options)
    assert edited.key != tiny_corpus.key


# ------------------------------------------------- b. features keyed by the audio files


@pytest.mark.parametrize("rescan", [False, True])
def test_replaced_audio_is_a_new_feature_cache(tmp_path, capsys, rescan):
    """Every clip replaced by other audio of the same length: the next cell extracts new
    features (whether or not the corpus is rescanned) and never reads the old ones."""
    root = speech_commands_tree(tmp_path / "sc")
    first = train_cell(sc_cell(tmp_path, f"corpus.root={root}"))
    features = tmp_path / "out" / "features"
    old = {d.name for d in features.iterdir() if d.is_dir()}
    assert len(old) == 3  # train, dev, test
    write_clips(root, seed=5)  # the same files and lengths, other samples; lists untouched
    capsys.readouterr()
    second = train_cell(sc_cell(tmp_path, f"corpus.root={root}", f"corpus.rescan={rescan}",
                                "force=true"))
    out = capsys.readouterr().out
    assert out.count("[cache] fbank features (") == 3 and "reading" not in out  # 3 written
    new = {d.name for d in features.iterdir() if d.is_dir()} - old
    assert len(new) == 3
    for split in ("train", "dev", "test"):
        was = [CachedFeatures.open(features / d) for d in old if f"-{split}-" in d]
        now = [CachedFeatures.open(features / d) for d in new if f"-{split}-" in d]
        assert len(was) == len(now) == 1
        assert was[0].lengths == now[0].lengths  # same durations ...
        assert any(not (a == b).all() for a, b in zip(was[0], now[0], strict=True))  # ... new audio
    assert second["run_dir"] == first["run_dir"]  # same manifests: force=true redid the cell


# ------------------------------------------------- c. manifests refreshed from their sources


def _drop_last_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


@pytest.mark.parametrize("source,subset,split,before,after", [
    ("testing_list.txt", "ks", "test", 12, 11),
    ("validation_list.txt", "ks", "dev", 13, 12),  # 12 words + 1 silence cut
    ("train-clean-100/19/198/19-198.trans.txt", "asr", "train", 3, 2),
])
def test_an_edited_source_is_rescanned(tmp_path, capsys, source, subset, split, before, after):
    if subset == "asr":
        root, cfg = librispeech_tree(tmp_path / "LibriSpeech"), "librispeech"
    else:
        root, cfg = speech_commands_tree(tmp_path / "sc"), "speech_commands"
    data = tmp_path / "data"
    first = load_corpus(real(cfg, root=str(root)), data, progress=False)
    assert len(first.items(subset, split)) == before
    assert str(root / source) in first.meta["sources"]
    key = first.key
    assert capsys.readouterr().out == ""
    _drop_last_line(root / source)
    again = load_corpus(real(cfg, root=str(root)), data, progress=False)
    assert capsys.readouterr().out == (
        f"[corpus] scanning {cfg} at {root} -> {first.root} ({root / source} changed since "
        "the last scan)\n")
    assert len(again.items(subset, split)) == after and again.key != key
    assert load_corpus(real(cfg, root=str(root)), data, progress=False).key == again.key
    assert capsys.readouterr().out == ""  # unchanged sources: the cache is read


@pytest.mark.parametrize("reader,source,line", [
    ("speech_commands", "testing_list.txt", "yes/spk05ab_nohash_0.wav"),
    ("librispeech", "test-clean/61/198/61-198.trans.txt", "61-198-0000 HELLO AGAIN"),
])
def test_a_duplicate_names_its_source_line_and_a_fix_is_read(tmp_path, reader, source, line):
    """A duplicate in a source list is an error at that list's line (not at a generated
    manifest); the fixed list is scanned again, with no corpus.rescan=true."""
    if reader == "librispeech":
        root = librispeech_tree(tmp_path / "LibriSpeech")
        ident, what = "61-198-0000", "librispeech asr/test"
    else:
        root = speech_commands_tree(tmp_path / "sc")
        ident, what = "yes/spk05ab_nohash_0", "speech_commands ks/test"
    data = tmp_path / "data"
    path = root / source
    good = path.read_text()
    path.write_text(good + line + "\n")
    n = len(good.splitlines()) + 1
    with pytest.raises(ManifestError) as err:
        load_corpus(real(reader, root=str(root)), data, progress=False)
    assert str(err.value) == (f"{path}:{n}: duplicate id {ident!r} in {what} "
                              f"(first at {path}:1)")
    path.write_text(good)
    corpus = load_corpus(real(reader, root=str(root)), data, progress=False)
    subset = "asr" if reader == "librispeech" else "ks"
    assert len(corpus.items(subset, "test")) == n - 1


# ------------------------------------------------- d. one pre-training run per directory


def test_two_cells_at_once_share_one_pretraining_run(make_cfg, tiny_corpus, data_dir, tmp_path):
    """Two seeds of an apc cell started together: one pre-trains, the other waits for the
    run directory and reuses the finished run (one model file, one weights hash)."""
    up = ["upstream=apc", "upstream.hidden_size=32", "upstream.pretrain.steps=3",
          "upstream.pretrain.batch_seconds=20"]
    cfg = make_cfg(*up, f"out_dir={tmp_path}")
    run = pretrain_dir(cfg, tiny_corpus)
    args = [*up, "downstream=ks", "downstream.optim.max_steps=4", "downstream.optim.eval_every=2",
            "corpus.size=tiny", f"data_dir={data_dir}", f"out_dir={tmp_path}"]
    logs = [tmp_path / f"seed{s}.log" for s in (1, 2)]
    procs = []
    with locked(run):  # both cells must find the run directory taken
        for seed, log in zip((1, 2), logs, strict=True):
            with open(log, "w") as f:
                procs.append(subprocess.Popen(
                    [sys.executable, "run.py", "progress=false", "num_threads=1",
                     f"seed={seed}", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT))
        deadline = time.time() + 120
        while not all("is being pre-trained by another process: waiting" in log.read_text()
                      for log in logs):
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
    for p in procs:
        assert p.wait(timeout=300) == 0, [log.read_text()[-2000:] for log in logs]
    text = [log.read_text() for log in logs]
    trained = [t for t in text if f"[pretrain] apc on {tiny_corpus.name}: 3 steps" in t]
    reused = [t for t in text if f"[pretrain] {run} is already pre-trained for 3 steps" in t]
    assert len(trained) == 1 and len(reused) == 1, text
    assert [d.name for d in run.parent.iterdir() if d.is_dir()] == [run.name]
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["model.safetensors"]
    rows = store.rows(tmp_path / "leaderboard.sqlite")
    assert sorted(r["seed"] for r in rows) == [1, 2]
    assert len({r["weights_hash"] for r in rows}) == 1


# ------------------------------------------------- e. a damaged meta.json of a corpus


SYNTH_FIX = "delete {dir} to synthesize it again"
REAL_FIX = "run again with corpus.rescan=true to scan {root} again"


@pytest.mark.parametrize("kind", ["synth", "speech_commands"])
@pytest.mark.parametrize("damage,problem", [
    (b"{\"counts\": ", "invalid JSON: Expecting value at line 1 column 12"),
    (b"\xff\xfe\x00garbage", "unreadable: UnicodeDecodeError"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b"{}", None),  # every key missing
])
def test_damaged_meta_json_is_named(tmp_path, data_dir, kind, damage, problem):
    meta, fix, cfg, data = _corpus_with_meta(tmp_path, data_dir, kind)
    keys = json.loads(meta.read_text())
    meta.write_bytes(damage)
    if problem is None:
        required = (("format_version", "size", "seed", "counts", "hours") if kind == "synth"
                    else ("name", "root", "format_version", "subsets", "counts", "sources"))
        assert set(required) <= set(keys)
        problem = f"missing key(s) {', '.join(required)}"
    with pytest.raises(ManifestError) as err:
        load_corpus(cfg, data, progress=False)
    assert str(err.value) == f"{meta}: damaged corpus metadata ({problem}); {fix}"
    if kind != "synth":  # the remedy it names works
        OmegaConf.update(cfg, "rescan", True)
        assert load_corpus(cfg, data, progress=False).meta["counts"]["ks"]["test"] == 12


@pytest.mark.parametrize("kind", ["synth", "speech_commands"])
def test_damaged_meta_json_through_run_py(tmp_path, data_dir, kind):
    meta, fix, cfg, data = _corpus_with_meta(tmp_path, data_dir, kind)
    meta.write_text('{"counts": ')
    args = ["corpus.size=tiny"] if kind == "synth" else [
        "corpus=speech_commands", f"corpus.root={cfg.root}"]
    out = run_py("upstream=fbank", "downstream=ks", f"data_dir={data}",
                 f"out_dir={tmp_path / 'out'}", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr == (f"error: {meta}: damaged corpus metadata (invalid JSON: Expecting "
                          f"value at line 1 column 12); {fix}\n")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("result.json"))


def _corpus_with_meta(tmp_path: Path, data_dir: Path, kind: str):
    """(meta.json, the remedy its error names, corpus config, data_dir) of a corpus of
    ``kind`` written under tmp_path."""
    data = tmp_path / "data"
    if kind == "synth":
        corpus = data / "synth" / "synth-tiny-seed0"
        shutil.copytree(data_dir / "synth" / "synth-tiny-seed0", corpus)
        cfg = OmegaConf.create({"name": "synth", "size": "tiny", "seed": 0, "root": None,
                                "num_workers": None})
        return corpus / "meta.json", SYNTH_FIX.format(dir=corpus), cfg, data
    root = speech_commands_tree(tmp_path / "sc")
    cfg = real("speech_commands", root=str(root))
    corpus = load_corpus(cfg, data, progress=False)
    return corpus.root / "meta.json", REAL_FIX.format(root=root), cfg, data
