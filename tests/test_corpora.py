"""Real-corpus readers on tiny trees in each published layout: items, labels, splits, the
manifest cache, errors naming the bad file, and one KS cell on Speech Commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speechssl.data.corpora.snips import parse_iob, parse_line
from speechssl.data.corpus import load_corpus
from speechssl.errors import AudioError, ConfigError, ManifestError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def wav(path: Path, seconds: float = 0.5, rate: int = 16000, seed: int = 0,
        fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * rate)).astype(np.float32)
    sf.write(path, x, rate, format=fmt, subtype="PCM_16")
    return path


def text(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


def recipe(name: str, **over) -> OmegaConf:
    """recipes/corpus/<name>.yaml with ``over`` applied (as the command line would)."""
    with initialize_config_dir(config_dir=str(RECIPES / "corpus"), version_base="1.3"):
        cfg = compose(name)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def by_id(items):
    return {it["id"]: it for it in items}


# ---------------------------------------------------------------- LibriSpeech

def librispeech_tree(root: Path) -> Path:
    for sub, spk, n in (("train-clean-100", "19", 3), ("dev-clean", "84", 2),
                        ("test-clean", "61", 2)):
        chap = root / sub / spk / "198"
        lines = []
        for i in range(n):
            utt = f"{spk}-198-{i:04d}"
            wav(chap / f"{utt}.flac", 0.5 + 0.25 * i, fmt="FLAC")
            lines.append(f"{utt} HELLO WORLD" if i % 2 == 0 else f"{utt} GOOD WORLD")
        text(chap / f"{spk}-198.trans.txt", "\n".join(lines) + "\n")
    return root


def test_librispeech_asr_and_pretrain(tmp_path):
    root = librispeech_tree(tmp_path / "LibriSpeech")
    corpus = load_corpus(recipe("librispeech", root=str(root)), tmp_path / "data", progress=False)
    assert corpus.name == "librispeech"
    train = corpus.items("asr", "train")
    assert [it["id"] for it in train] == ["19-198-0000", "19-198-0001", "19-198-0002"]
    it = train[1]
    assert it["text"] == "GOOD WORLD" and it["speaker"] == "19"
    assert it["duration"] == pytest.approx(0.75) and it["path"].endswith("19-198-0001.flac")
    assert Path(it["path"]).is_absolute() and "phonemes" not in it
    assert [i["id"] for i in corpus.items("asr", "test")] == ["61-198-0000", "61-198-0001"]
    assert set(corpus.items("pretrain", "dev")[0]) >= {"id", "path", "duration", "speaker"}
    assert "text" not in corpus.items("pretrain", "dev")[0]
    # PR without a lexicon: the corpus says what to set
    with pytest.raises(ConfigError, match="corpus.lexicon"):
        corpus.items("asr", "train", fields=("phonemes",))
    # a task this corpus has no subset for
    with pytest.raises(ConfigError, match="no 'ks' subset.*asr, pretrain"):
        corpus.items("ks", "train")


def test_librispeech_lexicon_phonemes(tmp_path):
    root = librispeech_tree(tmp_path / "LibriSpeech")
    lex = text(tmp_path / "lexicon.txt", "HELLO\tHH AH0 L OW1\nHELLO HH EH0 L OW1\n"
                                         "WORLD W ER1 L D\nGOOD G UH1 D\n")
    cfg = recipe("librispeech", root=str(root), lexicon=str(lex), strip_stress=True)
    corpus = load_corpus(cfg, tmp_path / "data", progress=False)
    items = by_id(corpus.items("asr", "train", fields=("phonemes",)))
    assert items["19-198-0000"]["phonemes"] == "HH AH L OW W ER L D"  # first pronunciation
    assert items["19-198-0001"]["phonemes"] == "G UH D W ER L D"
    keep = load_corpus(recipe("librispeech", root=str(root), lexicon=str(lex)),
                       tmp_path / "data", progress=False)
    assert by_id(keep.items("asr", "dev"))["84-198-0000"]["phonemes"] == "HH AH0 L OW1 W ER1 L D"


def test_librispeech_errors_name_the_file(tmp_path):
    root = librispeech_tree(tmp_path / "LibriSpeech")
    data = tmp_path / "data"
    lex = text(tmp_path / "lex.txt", "HELLO HH AH L OW\nWORLD W ER L D\n")
    with pytest.raises(ManifestError, match=r"19-198\.trans\.txt:2: word 'GOOD'"):
        load_corpus(recipe("librispeech", root=str(root), lexicon=str(lex)), data, progress=False)
    text(lex, "HELLO HH AH L OW\nWORLD\n")
    with pytest.raises(ManifestError, match=r"lex\.txt:2: .*no phonemes"):
        load_corpus(recipe("librispeech", root=str(root), lexicon=str(lex)), data, progress=False)
    with pytest.raises(ConfigError, match="corpus.lexicon"):
        load_corpus(recipe("librispeech", root=str(root), lexicon=str(tmp_path / "nope.txt")),
                    data, progress=False)
    with pytest.raises(ManifestError, match="train-other-500"):
        load_corpus(recipe("librispeech", root=str(root), train=["train-other-500"]), data,
                    progress=False)
    (root / "dev-clean" / "84" / "198" / "84-198-0001.flac").unlink()
    with pytest.raises(ManifestError, match=r"84-198\.trans\.txt:2: audio file not found"):
        load_corpus(recipe("librispeech", root=str(root)), data, progress=False)
    with pytest.raises(ConfigError, match="corpus.root is not set"):
        load_corpus(recipe("librispeech"), data, progress=False)
    with pytest.raises(ConfigError, match="corpus.root=.*directory not found"):
        load_corpus(recipe("librispeech", root=str(tmp_path / "missing")), data, progress=False)


def test_cache_is_reused_and_keyed_by_root(tmp_path, capsys):
    root = librispeech_tree(tmp_path / "LibriSpeech")
    data = tmp_path / "data"
    first = load_corpus(recipe("librispeech", root=str(root)), data, progress=True)
    assert "scanning librispeech" in capsys.readouterr().out
    # the cache is read, not the tree, while the sources the scan read are unchanged
    again = load_corpus(recipe("librispeech", root=str(root)), data, progress=True)
    assert capsys.readouterr().out == "" and again.root == first.root
    assert again.key == first.key
    # a changed transcript is a rescan (tests/faults/test_identity.py: every reader)
    trans = root / "train-clean-100" / "19" / "198" / "19-198.trans.txt"
    text(trans, trans.read_text().replace("GOOD WORLD", "GOOD DAY"))
    fresh = load_corpus(recipe("librispeech", root=str(root)), data, progress=False)
    assert f"({trans} changed since the last scan)" in capsys.readouterr().out
    assert by_id(fresh.items("asr", "train"))["19-198-0001"]["text"] == "GOOD DAY"
    assert fresh.root == first.root and fresh.key != first.key
    other = librispeech_tree(tmp_path / "copy")
    assert load_corpus(recipe("librispeech", root=str(other)), data, progress=False).root \
        != first.root
    assert first.meta["counts"]["asr"] == {"train": 3, "dev": 2, "test": 2}


# ---------------------------------------------------------------- Speech Commands

def speech_commands_tree(root: Path, test_root: Path | None = None) -> Path:
    files = {}
    for w, word in enumerate(("yes", "no", "up", "down", "left", "right", "on", "off",
                              "stop", "go", "bed", "cat")):
        for s in range(6):
            rel = f"{word}/spk{s:02d}ab_nohash_0.wav"
            wav(root / rel, 1.0, seed=100 * w + s)
            files.setdefault(s, []).append(rel)
    text(root / "validation_list.txt", "\n".join(files[4]) + "\n")
    text(root / "testing_list.txt", "\n".join(files[5]) + "\n")
    text(root / "README.md", "not a class folder\n")
    wav(root / "_background_noise_" / "white_noise.wav", 10.5, seed=7)
    wav(root / "_background_noise_" / "pink_noise.wav", 10.0, seed=8)
    if test_root is not None:
        for cls in ("yes", "stop", "_unknown_", "_silence_"):
            for i in range(2):
                wav(test_root / cls / f"t{i}_nohash_{i}.wav", 1.0, seed=900 + i)
    return root


def test_speech_commands_superb_protocol(tmp_path):
    root = speech_commands_tree(tmp_path / "speech_commands_v0.01")
    corpus = load_corpus(recipe("speech_commands", root=str(root)), tmp_path / "data",
                         progress=False)
    train, dev, test = (corpus.items("ks", s) for s in ("train", "dev", "test"))
    labels = {it["label"] for it in train}
    assert labels == {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                      "_unknown_", "_silence_"}
    words = [it for it in train if it["label"] != "_silence_"]
    assert len(words) == 12 * 4  # speakers 0-3; 4 is dev, 5 is test
    assert by_id(train)["bed/spk00ab_nohash_0"]["label"] == "_unknown_"
    assert by_id(train)["yes/spk00ab_nohash_0"]["speaker"] == "spk00ab"
    assert {it["speaker"] for it in words} == {f"spk{s:02d}ab" for s in range(4)}
    assert {it["speaker"] for it in dev if it["label"] != "_silence_"} == {"spk04ab"}
    assert {it["speaker"] for it in test} == {"spk05ab"} and len(test) == 12
    # silence: 10 + 10 one-second cuts (the 0.5 s tail dropped), every 10th to dev
    sil_train = [it for it in train if it["label"] == "_silence_"]
    sil_dev = [it for it in dev if it["label"] == "_silence_"]
    assert len(sil_train) == 18 and len(sil_dev) == 2
    assert all(it["duration"] == pytest.approx(1.0) for it in sil_train + sil_dev)
    assert not {it["path"] for it in sil_train} & {it["path"] for it in sil_dev}
    x, rate = sf.read(sil_dev[0]["path"])
    assert rate == 16000 and len(x) == 16000


def test_speech_commands_separate_test_set(tmp_path):
    test_root = tmp_path / "speech_commands_test_set_v0.01"
    root = speech_commands_tree(tmp_path / "speech_commands_v0.01", test_root)
    corpus = load_corpus(recipe("speech_commands", root=str(root), test_root=str(test_root)),
                         tmp_path / "data", progress=False)
    test = corpus.items("ks", "test")
    assert sorted({it["label"] for it in test}) == ["_silence_", "_unknown_", "stop", "yes"]
    assert len(test) == 8 and corpus.meta["test_source"] == "test_root"


def test_speech_commands_errors(tmp_path):
    root = speech_commands_tree(tmp_path / "sc")
    data = tmp_path / "data"
    text(root / "testing_list.txt", "yes/spk05ab_nohash_0.wav\nyes/missing_nohash_0.wav\n")
    with pytest.raises(ManifestError, match=r"testing_list\.txt:2: audio file not found"):
        load_corpus(recipe("speech_commands", root=str(root)), data, progress=False)
    text(root / "testing_list.txt", "just-a-name\n")
    with pytest.raises(ManifestError, match=r"testing_list\.txt:1: expected"):
        load_corpus(recipe("speech_commands", root=str(root)), data, progress=False)
    (root / "validation_list.txt").unlink()
    with pytest.raises(ManifestError, match=r"validation_list\.txt: .*not found"):
        load_corpus(recipe("speech_commands", root=str(root)), data, progress=False)
    with pytest.raises(ConfigError, match="silence_dev_fraction"):
        text(root / "validation_list.txt", "yes/spk04ab_nohash_0.wav\n")
        text(root / "testing_list.txt", "yes/spk05ab_nohash_0.wav\n")
        load_corpus(recipe("speech_commands", root=str(root), silence_dev_fraction=0),
                    data, progress=False)
    (root / "yes" / "spk00ab_nohash_0.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match=r"spk00ab_nohash_0\.wav"):
        load_corpus(recipe("speech_commands", root=str(root)), data, progress=False)


# ---------------------------------------------------------------- Fluent Speech Commands

FSC_HEADER = ",path,speakerId,transcription,action,object,location\n"


def fsc_tree(root: Path) -> Path:
    rows = {"train": [("s1", "u1", "Turn on the lights", "activate", "lights", "none"),
                      ("s1", "u2", "Heat up the kitchen", "increase", "heat", "kitchen")],
            "valid": [("s2", "u3", "Bring me my shoes", "bring", "shoes", "none")],
            "test": [("s3", "u4", "Lights off, bedroom", "deactivate", "lights", "bedroom")]}
    for split, rs in rows.items():
        lines = [FSC_HEADER]
        for i, (spk, utt, tr, a, o, loc) in enumerate(rs):
            rel = f"wavs/speakers/{spk}/{utt}.wav"
            wav(root / rel, 0.6)
            tr = f'"{tr}"' if "," in tr else tr
            lines.append(f"{i},{rel},{spk},{tr},{a},{o},{loc}\n")
        text(root / "data" / f"{split}_data.csv", "".join(lines))
    return root


def test_fluent_speech_commands(tmp_path):
    root = fsc_tree(tmp_path / "fluent_speech_commands_dataset")
    corpus = load_corpus(recipe("fluent_speech_commands", root=str(root)), tmp_path / "data",
                         progress=False)
    train = corpus.items("ic", "train")
    assert [it["id"] for it in train] == ["s1/u1", "s1/u2"]
    assert {k: train[1][k] for k in ("action", "object", "location", "speaker", "text")} == {
        "action": "increase", "object": "heat", "location": "kitchen", "speaker": "s1",
        "text": "Heat up the kitchen"}
    assert corpus.items("ic", "dev")[0]["speaker"] == "s2"
    assert corpus.items("ic", "test")[0]["text"] == "Lights off, bedroom"  # quoted comma


def test_fluent_speech_commands_errors(tmp_path):
    root = fsc_tree(tmp_path / "fsc")
    data = tmp_path / "data"
    csv = root / "data" / "valid_data.csv"
    text(csv, FSC_HEADER + "0,wavs/speakers/s2/u3.wav,s2,Bring,bring,shoes\n")
    with pytest.raises(ManifestError, match=r"valid_data\.csv:2: expected 7 fields, got 6"):
        load_corpus(recipe("fluent_speech_commands", root=str(root)), data, progress=False)
    text(csv, ",path,speakerId,transcription,action,object\n")
    with pytest.raises(ManifestError, match=r"valid_data\.csv:1: .*location"):
        load_corpus(recipe("fluent_speech_commands", root=str(root)), data, progress=False)
    text(csv, FSC_HEADER + "0,wavs/speakers/s2/gone.wav,s2,Bring,bring,shoes,none\n")
    with pytest.raises(ManifestError, match=r"valid_data\.csv:2: audio file not found"):
        load_corpus(recipe("fluent_speech_commands", root=str(root)), data, progress=False)
    text(csv, FSC_HEADER + "0,wavs/speakers/s2/u3.wav,s2,Bring,bring,shoes,none\n")
    (root / "data" / "test_data.csv").unlink()
    with pytest.raises(ManifestError, match=r"test_data\.csv: .*not found"):
        load_corpus(recipe("fluent_speech_commands", root=str(root)), data, progress=False)


# ---------------------------------------------------------------- VoxCeleb1

def voxceleb_tree(root: Path) -> Path:
    lines = []
    for spk in ("id10001", "id10002", "id10270", "id10271"):
        for vid in ("vidA", "vidB"):
            for n in (1, 2):
                rel = f"{spk}/{vid}/{n:05d}.wav"
                # dev speakers under wav/, the test speakers (id1027x) under test/wav/
                base = root / ("test/wav" if spk.startswith("id1027") else "wav")
                wav(base / rel, 0.4 + 0.1 * n)
                split = {("vidA", 1): 1, ("vidA", 2): 1, ("vidB", 1): 2, ("vidB", 2): 3}[(vid, n)]
                lines.append(f"{split} {rel}")
    text(root / "iden_split.txt", "\n".join(lines) + "\n")
    text(root / "veri_test.txt",  # the original list (SUPERB's)
         "1 id10270/vidA/00001.wav id10270/vidB/00002.wav\n"
         "0 id10270/vidA/00001.wav id10271/vidA/00002.wav\n"
         "1 id10271/vidB/00001.wav id10271/vidA/00001.wav\n")
    text(root / "veri_test2.txt", "1 id10270/vidA/00001.wav id10270/vidB/00002.wav\n"
         "1 id10271/vidB/00001.wav id10271/vidA/00001.wav\n")  # cleaned: a trial fewer
    return root


def test_voxceleb1_sid_and_asv(tmp_path):
    root = voxceleb_tree(tmp_path / "VoxCeleb1")
    corpus = load_corpus(recipe("voxceleb1", root=str(root)), tmp_path / "data", progress=False)
    sid = {s: corpus.items("sid", s) for s in ("train", "dev", "test")}
    assert len(sid["train"]) == 8 and len(sid["dev"]) == 4 and len(sid["test"]) == 4
    assert {it["id"] for it in sid["test"]} == {f"{s}/vidB/00002" for s in
                                                ("id10001", "id10002", "id10270", "id10271")}
    assert by_id(sid["dev"])["id10270/vidB/00001"]["path"].endswith(
        "test/wav/id10270/vidB/00001.wav")
    assert sid["train"][0]["speaker"] == "id10001"
    asv_train = corpus.items("asv", "train")
    assert {it["speaker"] for it in asv_train} == {"id10001", "id10002"} and len(asv_train) == 8
    asv_test = corpus.items("asv", "test")
    assert {it["id"] for it in asv_test} == {"id10270/vidA/00001", "id10270/vidB/00002",
                                             "id10271/vidA/00002", "id10271/vidB/00001",
                                             "id10271/vidA/00001"}
    trials = (corpus.root / "manifests" / "asv" / "trials.txt").read_text().splitlines()
    assert trials == ["1 id10270/vidA/00001 id10270/vidB/00002",
                      "0 id10270/vidA/00001 id10271/vidA/00002",
                      "1 id10271/vidB/00001 id10271/vidA/00001"]  # veri_test: SUPERB's
    test_ids = {it["id"] for it in asv_test}
    assert all(a in test_ids and b in test_ids for _, a, b in (t.split() for t in trials))
    cleaned = load_corpus(recipe("voxceleb1", root=str(root), trials="veri_test2.txt"),
                          tmp_path / "data", progress=False)
    assert (cleaned.root / "manifests" / "asv" / "trials.txt").read_text().splitlines() == [
        "1 id10270/vidA/00001 id10270/vidB/00002", "1 id10271/vidB/00001 id10271/vidA/00001"]
    assert {it["id"] for it in cleaned.items("asv", "test")} == {
        "id10270/vidA/00001", "id10270/vidB/00002", "id10271/vidB/00001", "id10271/vidA/00001"}


def test_voxceleb1_defaults_to_superbs_trial_list(tmp_path, capsys):
    """Issue 24: SUPERB scored ASV on the original VoxCeleb1-O list (s3prl's
    voxceleb1_test_v2.txt holds its 37,720 trials, not the cleaned list's 37,611):
    veri_test.txt is the default; the cleaned veri_test2.txt, when it is the only one, is
    used with a note saying its EERs do not compare with SUPERB's."""
    root = voxceleb_tree(tmp_path / "VoxCeleb1")
    corpus = load_corpus(recipe("voxceleb1", root=str(root)), tmp_path / "data", progress=False)
    assert len((corpus.root / "manifests" / "asv" / "trials.txt").read_text().splitlines()) == 3
    assert "cleaned list" not in capsys.readouterr().out
    (root / "veri_test.txt").unlink()
    corpus = load_corpus(recipe("voxceleb1", root=str(root)), tmp_path / "data2", progress=False)
    assert "ASV tests on veri_test2.txt, the cleaned list, not SUPERB's" in capsys.readouterr().out
    assert len((corpus.root / "manifests" / "asv" / "trials.txt").read_text().splitlines()) == 2


def test_voxceleb1_errors(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    data = tmp_path / "data"
    text(root / "veri_test.txt", "1 id10270/vidA/00001.wav\n")
    with pytest.raises(ManifestError, match=r"veri_test\.txt:1: expected"):
        load_corpus(recipe("voxceleb1", root=str(root)), data, progress=False)
    text(root / "veri_test.txt", "1 id10270/vidA/00001.wav id10270/vidA/00009.wav\n")
    with pytest.raises(ManifestError, match=r"veri_test\.txt: audio file 'id10270/vidA/00009"):
        load_corpus(recipe("voxceleb1", root=str(root)), data, progress=False)
    text(root / "iden_split.txt", "4 id10001/vidA/00001.wav\n")
    with pytest.raises(ManifestError, match=r"iden_split\.txt:1: expected"):
        load_corpus(recipe("voxceleb1", root=str(root)), data, progress=False)
    with pytest.raises(ConfigError, match="corpus.wav_dirs"):
        load_corpus(recipe("voxceleb1", root=str(root), wav_dirs=["nowhere"]), data,
                    progress=False)


# ---------------------------------------------------------------- IEMOCAP

def iemocap_tree(root: Path) -> Path:
    emotions = ("neu", "hap", "exc", "ang", "sad", "fru", "xxx")
    for s in range(1, 6):
        dialog = f"Ses0{s}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, emo in enumerate(emotions):
            utt = f"{dialog}_{'FM'[i % 2]}{i:03d}"
            wav(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt}.wav", 0.5)
            lines += [f"[{i}.5 - {i + 1}.25]\t{utt}\t{emo}\t[2.5000, 3.0000, 2.5000]",
                      f"C-E1:\t{'Neutral' if emo == 'neu' else 'Other'};\t()", ""]
        text(root / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
             "\n".join(lines) + "\n")
    return root


def test_iemocap_folds(tmp_path):
    root = iemocap_tree(tmp_path / "IEMOCAP_full_release")
    corpus = load_corpus(recipe("iemocap", root=str(root)), tmp_path / "data", progress=False)
    assert set(corpus.meta["subsets"]) == {"er", "pretrain"} | {f"er-fold{k}" for k in range(1, 6)}
    for k in range(1, 6):
        test = corpus.items(f"er-fold{k}", "test")
        assert {it["id"][:5] for it in test} == {f"Ses0{k}"}
        rest = corpus.items(f"er-fold{k}", "train") + corpus.items(f"er-fold{k}", "dev")
        assert len(rest) == 4 * 5 and f"Ses0{k}" not in {it["id"][:5] for it in rest}
        assert corpus.items(f"er-fold{k}", "dev")  # some held out for model selection
    test = by_id(corpus.items("er-fold2", "test"))
    assert len(test) == 5  # fru and xxx dropped
    assert [test[f"Ses02F_impro01_{x}"]["emotion"] for x in ("F000", "M001", "F002", "M003",
                                                               "F004")] == \
        ["neutral", "happy", "happy", "angry", "sad"]  # exc merged into happy
    assert test["Ses02F_impro01_M001"]["speaker"] == "Ses02M"
    for split in ("train", "dev", "test"):  # "er" is fold 1
        assert [i["id"] for i in corpus.items("er", split)] == \
            [i["id"] for i in corpus.items("er-fold1", split)]


def test_iemocap_errors(tmp_path):
    root = iemocap_tree(tmp_path / "iemocap")
    data = tmp_path / "data"
    label = root / "Session3" / "dialog" / "EmoEvaluation" / "Ses03F_impro01.txt"
    text(label, label.read_text().replace("[2.5 - 3.25]\t", "[2.5 - 3.25] "))
    with pytest.raises(ManifestError, match=r"Ses03F_impro01\.txt:9: expected"):
        load_corpus(recipe("iemocap", root=str(root)), data, progress=False)
    text(label, label.read_text().replace("[2.5 - 3.25] ", "[2.5 - 3.25]\t"))
    shutil.rmtree(root / "Session5")
    with pytest.raises(ManifestError, match="Session5"):
        load_corpus(recipe("iemocap", root=str(root)), data, progress=False)


# ---------------------------------------------------------------- SNIPS

def test_parse_iob_hand_worked():
    words = "add the song my heart will go on to my road trip playlist".split()
    tags = ("O O O B-entity_name I-entity_name I-entity_name I-entity_name I-entity_name O "
            "O B-playlist I-playlist O").split()
    sentence, slots = parse_iob(words, tags, "x")
    assert slots == [{"start": 13, "end": 32, "type": "entity_name", "value": "my heart will go on"},
                     {"start": 39, "end": 48, "type": "playlist", "value": "road trip"}]
    assert all(sentence[s["start"]:s["end"]] == s["value"] for s in slots)
    # a B- right after another slot starts a new one
    assert len(parse_iob(["a", "b"], ["B-x", "B-x"], "x")[1]) == 2
    with pytest.raises(ManifestError, match="bad slot tag 'Q-x'"):
        parse_iob(["a"], ["Q-x"], "x")


def test_parse_line_reads_plain_slot_names_as_the_snips_release_writes_them():
    """Issue 24: the Audio SNIPS label file names slots without B-/I- ('city city'), as s3prl
    reads it; adjacent words of one type are one slot, an O or another type ends it."""
    line = ("Brian-snips-test-7 BOS book a table in new york city for two at noon EOS\t"
            "O O O O O city city city O party_size_number O timeRange BookRestaurant")
    uid, lab = parse_line(line, "all.iob.snips.txt:8")
    assert uid == "Brian-snips-test-7" and lab["intent"] == "BookRestaurant"
    assert [(s["type"], s["value"]) for s in lab["slots"]] == [
        ("city", "new york city"), ("party_size_number", "two"), ("timeRange", "noon")]
    assert all(lab["text"][s["start"]:s["end"]] == s["value"] for s in lab["slots"])
    # the same line in IOB gives the same slots
    iob = line.replace("city city city", "B-city I-city I-city").replace(
        "party_size_number", "B-party_size_number").replace("timeRange B", "B-timeRange B")
    assert parse_line(iob, "x")[1] == lab


def snips_tree(root: Path) -> Path:
    lines = []
    for split, speakers in (("train", ("Joanna", "Brian")), ("valid", ("Amy",)),
                            ("test", ("Emma",))):
        for spk in speakers:
            uid = f"{spk}-snips-{split}-0"
            wav(root / split / f"{uid}.wav", 0.7)
            lines.append(f"{uid} BOS play some jazz by miles davis EOS\t"
                         f"O O O B-genre O B-artist I-artist PlayMusic")
    text(root / "all.iob.snips.txt", "\n".join(lines) + "\n")
    return root


def test_snips_slots_and_speaker_splits(tmp_path):
    root = snips_tree(tmp_path / "SNIPS")
    corpus = load_corpus(recipe("snips", root=str(root)), tmp_path / "data", progress=False)
    train = corpus.items("sf", "train")
    assert [it["id"] for it in train] == ["Joanna-snips-train-0"]  # Brian is a test speaker
    it = train[0]
    assert it["text"] == "play some jazz by miles davis" and it["intent"] == "PlayMusic"
    assert it["slots"] == [{"start": 10, "end": 14, "type": "genre", "value": "jazz"},
                           {"start": 18, "end": 29, "type": "artist", "value": "miles davis"}]
    assert corpus.items("sf", "dev")[0]["speaker"] == "Amy"
    assert corpus.items("sf", "test")[0]["id"] == "Emma-snips-test-0"


def test_snips_errors(tmp_path):
    root = snips_tree(tmp_path / "SNIPS")
    data = tmp_path / "data"
    body = (root / "all.iob.snips.txt").read_text().splitlines()
    text(root / "all.iob.snips.txt", "\n".join(body[:2] + [body[2].replace(" B-genre", "")]))
    with pytest.raises(ManifestError, match=r"all\.iob\.snips\.txt:3: expected"):
        load_corpus(recipe("snips", root=str(root)), data, progress=False)
    text(root / "all.iob.snips.txt", "\n".join(body[:2] + body[3:]))  # drop Amy's line
    with pytest.raises(ManifestError, match=r"Amy-snips-valid-0\.wav: no line"):
        load_corpus(recipe("snips", root=str(root)), data, progress=False)


# ---------------------------------------------------------------- LibriMix (SUPERB Kaldi dirs)

def librimix_tree(root: Path, audio: Path) -> Path:
    for split in ("train", "dev", "test"):
        d = root / split
        recs = [f"{split}_a-b", f"{split}_c-d"]
        wav_scp, segments, utt2spk = [], [], []
        for r, rec in enumerate(recs):
            path = wav(audio / split / f"{rec}.wav", 3.0, seed=r)
            wav_scp.append(f"{rec} {path}")
            spk1, spk2 = rec.split("_")[1].split("-")
            # speaker 2 starts first in the second recording; turns overlap
            turns = [(spk1, 0.5 + r, 2.0 + r / 2), (spk2, 0.25, 1.5), (spk1, 2.5, 2.9)]
            for k, (spk, t0, t1) in enumerate(turns):
                utt = f"{spk}-{rec}-{k}"
                segments.append(f"{utt} {rec} {t0:.2f} {t1:.2f}")
                utt2spk.append(f"{utt} {spk}")
        text(d / "wav.scp", "\n".join(wav_scp) + "\n")
        text(d / "segments", "\n".join(segments) + "\n")
        text(d / "utt2spk", "\n".join(utt2spk) + "\n")
        text(d / "reco2dur", "".join(f"{r} 3.0\n" for r in recs))
    return root


def test_librimix_segments(tmp_path):
    root = librimix_tree(tmp_path / "data_sd", tmp_path / "Libri2Mix")
    corpus = load_corpus(recipe("librimix", root=str(root)), tmp_path / "data", progress=False)
    test = by_id(corpus.items("sd", "test"))
    assert set(test) == {"test_a-b", "test_c-d"}
    it = test["test_a-b"]
    assert it["segments"] == [{"start": 0.25, "end": 1.5, "speaker": "b"},
                              {"start": 0.5, "end": 2.0, "speaker": "a"},
                              {"start": 2.5, "end": 2.9, "speaker": "a"}]
    assert it["speakers"] == ["b", "a"] and it["speaker"] == "b+a"
    assert it["duration"] == pytest.approx(3.0)
    assert by_id(corpus.items("sd", "train"))["train_c-d"]["segments"][1] == \
        {"start": 1.5, "end": 2.5, "speaker": "c"}
    assert "segments" not in corpus.items("pretrain", "train")[0]


def test_librimix_errors(tmp_path):
    root = librimix_tree(tmp_path / "data_sd", tmp_path / "Libri2Mix")
    data = tmp_path / "data"
    seg = root / "dev" / "segments"
    good = seg.read_text()
    text(seg, good.replace("0.25 1.50", "1.50 0.25", 1))
    with pytest.raises(ManifestError, match=r"dev/segments:2: expected 0 <= start < end"):
        load_corpus(recipe("librimix", root=str(root)), data, progress=False)
    text(seg, good + "x-dev_a-b-9 dev_zz 0.1 0.2\n")
    with pytest.raises(ManifestError, match=r"dev/segments:7: recording 'dev_zz'"):
        load_corpus(recipe("librimix", root=str(root)), data, progress=False)
    text(seg, good.replace("2.50 2.90", "2.50 3.90", 1))
    with pytest.raises(ManifestError, match=r"dev_a-b\.wav: a segment ends at 3\.90"):
        load_corpus(recipe("librimix", root=str(root)), data, progress=False)
    text(seg, good)
    (root / "test" / "utt2spk").unlink()
    with pytest.raises(ManifestError, match=r"test/utt2spk: .*not found"):
        load_corpus(recipe("librimix", root=str(root)), data, progress=False)


# ---------------------------------------------------------------- config and end to end

def test_unknown_corpus_names_choices(tmp_path):
    cfg = OmegaConf.create({"name": "timit", "root": str(tmp_path)})
    with pytest.raises(ConfigError, match="unknown corpus 'timit'.*speech_commands"):
        load_corpus(cfg, tmp_path, progress=False)


def test_ks_cell_on_speech_commands(tmp_path, capsys):
    from speechssl import store
    from speechssl.train import train_cell

    root = speech_commands_tree(tmp_path / "speech_commands_v0.01")
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}", "progress=false",
            "device=cpu", "upstream=fbank", "downstream=ks", "corpus=speech_commands",
            f"corpus.root={root}", "downstream.optim.max_steps=10",
            "downstream.optim.eval_every=5"])
    row = train_cell(cfg)
    assert row["corpus"] == "speech_commands" and row["task"] == "ks"
    # no corpus.test_root: the run says its test set is not SUPERB's (issue 24)
    assert "[ks] test set: Speech Commands v0.01's testing_list.txt" in capsys.readouterr().out
    assert 0.0 <= row["test_value"] <= 100.0
    assert Path(row["run_dir"]).parts[-2].startswith("speech_commands-")
    stored = store.rows(cfg.leaderboard)
    assert [(r["corpus"], r["task"]) for r in stored] == [("speech_commands", "ks")]


def test_er_on_iemocap_runs_and_averages_the_five_folds(tmp_path, capsys):
    """Issue 24: ``downstream.fold=null`` on IEMOCAP trains the five leave-one-session-out
    folds (one row each, fold 1..5) and the leaderboard cell is their mean, each fold once;
    ``fold=2`` trains that fold alone."""
    from speechssl import score, store
    from speechssl.modes import MODES, fold_configs

    root = iemocap_tree(tmp_path / "IEMOCAP_full_release")
    overrides = [f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}",
                 "progress=false", "device=cpu", "upstream=fbank", "downstream=er",
                 "corpus=iemocap", f"corpus.root={root}", "downstream.optim.max_steps=4",
                 "downstream.optim.eval_every=2"]
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        one = compose("config", overrides=[*overrides, "downstream.fold=2"])
        synth = compose("config", overrides=["downstream=er"])
    assert [c.downstream.fold for c in fold_configs(cfg)] == [1, 2, 3, 4, 5]
    assert [c.downstream.fold for c in fold_configs(one)] == [2]
    assert [c.downstream.fold for c in fold_configs(synth)] == [None]  # no folds there
    MODES.get("train")(cfg)
    assert "er over 5 folds (test accuracy): fold 1 " in capsys.readouterr().out
    stored = store.rows(cfg.leaderboard)
    assert sorted(score.run_fold(r) for r in stored) == [1, 2, 3, 4, 5]
    (c,) = score.aggregate(stored)
    assert c.n_folds == 5
    assert c.test == pytest.approx(sum(r["test_value"] for r in stored) / 5)
