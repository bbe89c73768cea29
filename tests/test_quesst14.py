"""QUESST 2014 reader on a tiny tree in the published layout (quesst14Database/): items in the
QbE contract, hit labels, dev/eval splits, language filter, errors naming the bad file and
line, and one QbE cell (fbank) whose queries, cut from documents, rank those first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from downstream.base import build_task
from speechssl.data.audio import load_audio
from speechssl.data.corpora.quesst14 import NO_HIT
from speechssl.data.corpus import load_corpus
from speechssl.errors import ConfigError, ManifestError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
RATE = 8000  # QUESST14 audio is 8 kHz
DOC_SECONDS = 2.0

# document id -> language
DOCS = {"quesst14_00000": "nnenglish", "quesst14_00001": "nnenglish",
        "quesst14_00002": "nnenglish", "quesst14_00003": "nnenglish",
        "quesst14_00004": "basque", "quesst14_00005": "nnenglish"}  # 00005: no query
# query id -> (folder, language, document it is cut from, start s, duration s)
QUERIES = {
    "quesst14_dev_0000": ("dev_queries", "nnenglish", "quesst14_00001", 0.5, 0.5),
    "quesst14_dev_0001": ("dev_queries", "nnenglish", "quesst14_00002", 1.0, 0.6),
    "quesst14_dev_0002": ("dev_queries", "basque", "quesst14_00004", 0.3, 0.5),
    "quesst14_eval_0000": ("eval_queries", "nnenglish", "quesst14_00003", 0.2, 0.6),
    "quesst14_eval_0001": ("eval_queries", "nnenglish", "quesst14_00000", 1.2, 0.5),
}
# the segment of eval_0001 is pasted into quesst14_00002 at 0.2 s: a second occurrence
PASTE = ("quesst14_00000", 1.2, 0.5, "quesst14_00002", 0.2)

# NIST RTTM as the scorer reads it: LEXEME <doc> <chnl> <tbeg> <dur> <query id> <stype>
# <speaker> <conf>; other types, ';;' comments and NO_KEYWORD lexemes name no occurrence.
DEV_RTTM = """\
;; QUESST 2014 dev ground truth (tiny test tree)
SPEAKER quesst14_00001 1 0.000 2.000 <NA> <NA> quesst14_00001 <NA>
LEXEME quesst14_00001 1 0.500 0.500 quesst14_dev_0000 lex quesst14_00001 <NA>
LEXEME quesst14_00002 1 1.000 0.600 quesst14_dev_0001 lex quesst14_00002 <NA>
LEXEME quesst14_00004 1 0.300 0.500 quesst14_dev_0002 lex quesst14_00004 <NA>
LEXEME quesst14_00000 1 0.000 2.000 NO_KEYWORD lex quesst14_00000 <NA>
"""
EVAL_RTTM = """\
LEXEME quesst14_00003 1 0.200 0.600 quesst14_eval_0000 lex quesst14_00003 <NA>
LEXEME quesst14_00000 1 1.200 0.500 quesst14_eval_0001 lex quesst14_00000 <NA>
LEXEME quesst14_00002 1 0.200 0.500 quesst14_eval_0001 lex quesst14_00002 <NA>
"""


def tones(seed: int) -> np.ndarray:
    """2 s of 0.1 s segments, each two random tones: documents unlike one another."""
    rng = np.random.default_rng(seed)
    seg = int(0.1 * RATE)
    t = np.arange(seg) / RATE
    parts = [0.2 * np.sin(2 * np.pi * f1 * t) + 0.15 * np.sin(2 * np.pi * f2 * t)
             for f1, f2 in rng.uniform(150, 3500, size=(int(DOC_SECONDS / 0.1), 2))]
    return np.concatenate(parts).astype(np.float32)


def write(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


def quesst14_tree(parent: Path) -> Path:
    """``<parent>/quesst14Database`` in the published layout; returns that directory."""
    root = parent / "quesst14Database"
    audio = {d: tones(i) for i, d in enumerate(DOCS)}
    src, s0, dur, dst, d0 = PASTE
    n, a, b = int(dur * RATE), int(s0 * RATE), int(d0 * RATE)
    audio[dst][b:b + n] = audio[src][a:a + n]
    for doc, x in audio.items():
        (root / "Audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / "Audio" / f"{doc}.wav", x, RATE, subtype="PCM_16")
    lists = {"dev_queries": [], "eval_queries": []}
    for q, (folder, lang, doc, start, dur) in QUERIES.items():
        a, n = int(start * RATE), int(dur * RATE)
        (root / folder).mkdir(parents=True, exist_ok=True)
        sf.write(root / folder / f"{q}.wav", audio[doc][a:a + n], RATE, subtype="PCM_16")
        lists[folder].append(f"quesst14Database/{folder}/{q}.wav {lang}\n")
    scoring = root / "scoring"
    write(scoring / "language_key_utterances.lst",
          "".join(f"quesst14Database/Audio/{d}.wav {lang}\n" for d, lang in DOCS.items()))
    write(scoring / "language_key_dev.lst", "".join(lists["dev_queries"]))
    write(scoring / "language_key_eval.lst", "".join(lists["eval_queries"]))
    write(scoring / "groundtruth_quesst14_dev" / "quesst14_dev.rttm", DEV_RTTM)
    write(scoring / "groundtruth_quesst14_eval" / "quesst14_eval.rttm", EVAL_RTTM)
    return root


def recipe(**over) -> OmegaConf:
    with initialize_config_dir(config_dir=str(RECIPES / "corpus"), version_base="1.3"):
        cfg = compose("quesst14")
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def labels(items: list[dict]) -> dict[str, list[str]]:
    """query id -> the document ids it hits, as the QbE task reads the items."""
    queries, docs, y = build_task("qbe").roles(items)
    return {items[q]["id"]: [items[docs[j]]["id"] for j in np.flatnonzero(y[i])]
            for i, q in enumerate(queries)}


def test_quesst14_items_labels_and_splits(tmp_path):
    root = quesst14_tree(tmp_path)
    corpus = load_corpus(recipe(root=str(root)), tmp_path / "data", progress=False)
    assert corpus.name == "quesst14"
    dev, test = corpus.items("qbe", "dev"), corpus.items("qbe", "test")
    english_docs = ["quesst14_00000", "quesst14_00001", "quesst14_00002", "quesst14_00003",
                    "quesst14_00005"]
    assert [it["id"] for it in dev] == ["quesst14_dev_0000", "quesst14_dev_0001", *english_docs]
    assert [it["id"] for it in test] == ["quesst14_eval_0000", "quesst14_eval_0001",
                                         *english_docs]
    q = dev[0]
    assert (q["kind"], q["term"], q["language"]) == ("query", "quesst14_dev_0000", "nnenglish")
    assert q["duration"] == pytest.approx(0.5) and Path(q["path"]).is_absolute()
    assert q["path"].endswith("dev_queries/quesst14_dev_0000.wav")
    d = {it["id"]: it for it in test}
    assert d["quesst14_00002"]["kind"] == "doc" and d["quesst14_00002"]["duration"] == 2.0
    assert d["quesst14_00002"]["path"].endswith("Audio/quesst14_00002.wav")
    assert d["quesst14_00002"]["text"] == "quesst14_eval_0001"
    assert d["quesst14_00002"]["occurrences"] == [
        {"term": "quesst14_eval_0001", "start": 0.2, "end": 0.7}]
    assert d["quesst14_00001"]["text"] == NO_HIT and d["quesst14_00001"]["occurrences"] == []
    # the documents carry only their split's queries
    assert {it["id"]: it["text"] for it in dev if it["kind"] == "doc"} == {
        "quesst14_00000": NO_HIT, "quesst14_00001": "quesst14_dev_0000",
        "quesst14_00002": "quesst14_dev_0001", "quesst14_00003": NO_HIT,
        "quesst14_00005": NO_HIT}
    assert labels(dev) == {"quesst14_dev_0000": ["quesst14_00001"],
                           "quesst14_dev_0001": ["quesst14_00002"]}
    assert labels(test) == {"quesst14_eval_0000": ["quesst14_00003"],
                            "quesst14_eval_0001": ["quesst14_00000", "quesst14_00002"]}
    # pretrain: the documents (train) and dev queries (dev), audio only
    pre = corpus.items("pretrain", "train")
    assert [it["id"] for it in pre] == english_docs and "text" not in pre[0]
    assert [it["id"] for it in corpus.items("pretrain", "dev")] == ["quesst14_dev_0000",
                                                                     "quesst14_dev_0001"]
    assert corpus.meta["counts"]["qbe"] == {"dev": 7, "test": 7}
    assert corpus.meta["languages"] == ["nnenglish"]
    assert corpus.meta["ground_truth"]["test"].endswith(
        "groundtruth_quesst14_eval/quesst14_eval.rttm")
    with pytest.raises(ConfigError, match="no 'asr' subset.*pretrain, qbe"):
        corpus.items("asr", "train")


def test_quesst14_8khz_audio_is_resampled_on_load(tmp_path):
    root = quesst14_tree(tmp_path)
    corpus = load_corpus(recipe(root=str(root)), tmp_path / "data", progress=False)
    doc = corpus.items("qbe", "dev")[-1]
    assert sf.info(doc["path"]).samplerate == RATE and doc["duration"] == DOC_SECONDS
    assert load_audio(doc["path"], 16000).shape[0] == int(DOC_SECONDS * 16000)


def test_quesst14_all_languages_and_parent_root(tmp_path):
    quesst14_tree(tmp_path)
    # corpus.root may also be the directory holding quesst14Database/
    corpus = load_corpus(recipe(root=str(tmp_path), languages=[]), tmp_path / "data",
                         progress=False)
    dev = corpus.items("qbe", "dev")
    assert [it["id"] for it in dev if it["kind"] == "query"] == [
        "quesst14_dev_0000", "quesst14_dev_0001", "quesst14_dev_0002"]
    assert len([it for it in dev if it["kind"] == "doc"]) == 6
    assert labels(dev)["quesst14_dev_0002"] == ["quesst14_00004"]
    assert {it["language"] for it in dev} == {"nnenglish", "basque"}
    assert corpus.meta["languages"] == ["albanian", "basque", "czech", "nnenglish", "romanian",
                                        "slovak"]
    # a language with no eval query in the tree: the list says so
    with pytest.raises(ManifestError, match=r"language_key_eval\.lst: no queries in "
                                            r"corpus\.languages=\['basque'\]"):
        load_corpus(recipe(root=str(tmp_path), languages=["basque"]), tmp_path / "data",
                    progress=False)


def test_quesst14_audio_of_other_languages_may_be_missing(tmp_path):
    # SUPERB uses nnenglish only: a copy without the other languages' audio still reads
    root = quesst14_tree(tmp_path)
    (root / "Audio" / "quesst14_00004.wav").unlink()
    (root / "dev_queries" / "quesst14_dev_0002.wav").unlink()
    corpus = load_corpus(recipe(root=str(root)), tmp_path / "data", progress=False)
    assert len(corpus.items("qbe", "dev")) == 7


def _append(rel: str, line: str):
    def mutate(root: Path) -> None:
        with open(root / rel, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return mutate


def _unlink(rel: str):
    return lambda root: (root / rel).unlink()


DEV_GT = "scoring/groundtruth_quesst14_dev/quesst14_dev.rttm"
EVAL_GT = "scoring/groundtruth_quesst14_eval/quesst14_eval.rttm"

ERRORS = {
    "missing_directory": (lambda root: shutil.rmtree(root / "eval_queries"),
                          r"quesst14Database/eval_queries: QUESST14 eval_queries directory not found"),
    "missing_list_file": (_unlink("scoring/language_key_dev.lst"),
                          r"scoring/language_key_dev\.lst: .*not found"),
    "missing_groundtruth": (_unlink(EVAL_GT),
                            r"quesst14_eval\.rttm: QUESST14 test ground truth .*not found"),
    "malformed_list_line": (_append("scoring/language_key_utterances.lst",
                                    "quesst14Database/Audio/quesst14_00009.wav"),
                            r"language_key_utterances\.lst:7: expected '<dir>/<name>\.wav "
                            r"<language>'"),
    "listed_audio_missing": (_unlink("Audio/quesst14_00005.wav"),
                             r"language_key_utterances\.lst:6: audio file not found: .*"
                             r"Audio/quesst14_00005\.wav"),
    "gt_query_not_listed": (_append(DEV_GT, "LEXEME quesst14_00001 1 0.100 0.300 "
                                            "quesst14_dev_0099 lex quesst14_00001 <NA>"),
                            r"quesst14_dev\.rttm:7: query 'quesst14_dev_0099' has no audio: "
                            r"it is not in scoring/language_key_dev\.lst"),
    "gt_query_audio_deleted": (_unlink("dev_queries/quesst14_dev_0001.wav"),
                               r"quesst14_dev\.rttm:4: query 'quesst14_dev_0001' has no audio: "
                               r".*quesst14_dev_0001\.wav not found"),
    "gt_document_audio_deleted": (_unlink("Audio/quesst14_00002.wav"),
                                  r"quesst14_dev\.rttm:4: document 'quesst14_00002' has no "
                                  r"audio: .*Audio/quesst14_00002\.wav not found"),
    "gt_document_not_listed": (_append(EVAL_GT, "LEXEME quesst14_09999 1 0.1 0.3 "
                                                "quesst14_eval_0000 lex x <NA>"),
                               r"quesst14_eval\.rttm:4: document 'quesst14_09999' has no audio"),
    "gt_short_lexeme": (_append(DEV_GT, "LEXEME quesst14_00001 1 0.5 0.5"),
                        r"quesst14_dev\.rttm:7: expected 'LEXEME <document>"),
    "gt_bad_time": (_append(DEV_GT, "LEXEME quesst14_00001 1 abc 0.5 quesst14_dev_0000 lex x "
                                    "<NA>"),
                    r"quesst14_dev\.rttm:7: tbeg/dur must be seconds, got 'abc'"),
    "gt_negative_time": (_append(DEV_GT, "LEXEME quesst14_00001 1 -1.0 0.5 quesst14_dev_0000 "
                                         "lex x <NA>"),
                         r"quesst14_dev\.rttm:7: expected tbeg >= 0"),
    "gt_not_rttm": (_append(DEV_GT, "quesst14_00001 quesst14_dev_0000"),
                    r"quesst14_dev\.rttm:7: expected an RTTM line"),
    "gt_no_hits": (lambda root: write(root / EVAL_GT, "LEXEME quesst14_00000 1 0 2 NO_KEYWORD "
                                                      "lex x <NA>\n"),
                   r"quesst14_eval\.rttm: none of the 2 test queries occurs in the 5 documents"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_quesst14_errors_name_the_file(tmp_path, case):
    root = quesst14_tree(tmp_path)
    mutate, message = ERRORS[case]
    mutate(root)
    with pytest.raises(ManifestError, match=message):
        load_corpus(recipe(root=str(root)), tmp_path / "data", progress=False)


def test_quesst14_bad_options(tmp_path):
    root = quesst14_tree(tmp_path)
    with pytest.raises(ConfigError, match=r"corpus.languages=\['english'\]: unknown english"):
        load_corpus(recipe(root=str(root), languages=["english"]), tmp_path / "data",
                    progress=False)
    with pytest.raises(ManifestError, match=r"nope\.rttm: QUESST14 dev ground truth "
                                            r"\(corpus\.dev_groundtruth\) not found"):
        load_corpus(recipe(root=str(root), dev_groundtruth="scoring/nope.rttm"),
                    tmp_path / "data", progress=False)
    with pytest.raises(ConfigError, match="corpus.root is not set"):
        load_corpus(recipe(), tmp_path / "data", progress=False)


def test_qbe_cell_on_quesst14(tmp_path):
    from speechssl.train import train_cell

    root = quesst14_tree(tmp_path)
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}", "progress=false",
            "device=cpu", "upstream=fbank", "downstream=qbe", "corpus=quesst14",
            f"corpus.root={root}"])
    row = train_cell(cfg)
    assert (row["corpus"], row["task"], row["metric"]) == ("quesst14", "qbe", "mtwv")
    found = json.loads(row["metrics_json"])
    for split in ("dev", "test"):
        assert 0.0 <= found[split]["mtwv"] <= 100.0
        # every query is cut from the documents it hits, so they rank first: AP = 1
        assert found[split]["map"] == pytest.approx(100.0)
    assert row["test_value"] == pytest.approx(found["test"]["mtwv"])
    scored = [json.loads(line) for line in
              (Path(row["run_dir"]) / "qbe_test_scores.jsonl").read_text().splitlines()]
    assert len(scored) == 2 * 5
    for query, hits in (("quesst14_eval_0000", {"quesst14_00003"}),
                        ("quesst14_eval_0001", {"quesst14_00000", "quesst14_00002"})):
        ranked = sorted((r for r in scored if r["query"] == query), key=lambda r: -r["score"])
        assert {r["doc"] for r in ranked[:len(hits)]} == hits
        assert all(r["hit"] == (r["doc"] in hits) for r in ranked)
