"""The synthesized text corpus (deterministic, generated beside an existing speech corpus
without touching it, hard for bag-of-words) and the GLUE / SQuAD / CoNLL-U readers."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from speechssl.data.corpus import Corpus, load_corpus
from speechssl.data.synth import text_corpus as T
from speechssl.errors import ConfigError, ManifestError
from speechssl.text.data import text_items


def _hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_deterministic_and_seeded():
    a, b = T.plan_text("tiny", 0), T.plan_text("tiny", 0)
    assert a == b
    assert T.plan_text("tiny", 1)["text-sst2"]["train"] != a["text-sst2"]["train"]
    assert set(a) == {"text-sst2", "text-pos", "text-nli", "text-qa", "text-pretrain"}
    assert {len(v) for v in a["text-sst2"].values()} == set(T.TEXT_SIZES["tiny"]["sst2"])


def test_items_are_well_formed():
    m = T.plan_text("tiny", 0)
    for split in ("train", "dev", "test"):
        for it in m["text-pos"][split]:
            assert len(it["words"]) == len(it["tags"]) and set(it["tags"]) <= set(T.UPOS)
            assert it["text"] == " ".join(it["words"])
        for it in m["text-qa"][split]:
            (ans,) = it["answers"]
            assert it["text_pair"][ans["start"]: ans["start"] + len(ans["text"])] == ans["text"]
            assert it["text"].split()[0] in ("who", "what", "where")
    nli = Counter(it["label"] for it in m["text-nli"]["train"])
    assert set(nli) == set(T.NLI_LABELS) and min(nli.values()) > 0.25 * sum(nli.values())
    sst = Counter(it["label"] for it in m["text-sst2"]["train"])
    assert set(sst) == {"positive", "negative"} and min(sst.values()) > 0.35 * sum(sst.values())
    assert all(it["text"] and it["text_pair"] for it in m["text-pretrain"]["train"])


def test_labels_are_a_function_of_the_text():
    """The ceiling is 100%: identical inputs never carry different labels."""
    for task in ("sst2", "nli"):
        seen: dict[tuple, str] = {}
        for i in range(3000):
            it = T.make_item(task, 0, "train", i)
            key = (it["text"], it.get("text_pair"))
            assert seen.setdefault(key, it["label"]) == it["label"], key


def test_hand_checked_semantics():
    assert T.be_form("3s", "present", plural=False) == "is"
    assert T.be_form("3p", "past") == "were"
    assert [w for w, _ in T.verb_group(("buy", "bought", "buying", "buys"), "3s", "present",
                                        True)] == ["does", "not", "buy"]
    f = {"subj": (None, None, "anna"), "verb": ("buy", "bought", "buying", "buys"),
         "obj": ("the", None, "apple"), "adj": "red", "place": "kitchen", "subj_adj": "old"}
    assert T.render_fact(f, False, frozenset({"adj", "place"})) == \
        "anna bought the red apple in the kitchen"
    assert T.render_fact(f, True, frozenset()) == "anna did not buy the apple"


def _bow_accuracy(task: str, n_train: int = 2000, n_test: int = 500) -> float:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    def text(it):  # premise and hypothesis words kept apart for NLI
        return it["text"] + " " + " ".join("h_" + w for w in it.get("text_pair", "").split())

    train = [T.make_item(task, 0, "train", i) for i in range(n_train)]
    test = [T.make_item(task, 0, "test", i) for i in range(n_test)]
    vec = CountVectorizer(token_pattern=r"\S+")
    clf = LogisticRegression(max_iter=1000).fit(vec.fit_transform([text(i) for i in train]),
                                                [i["label"] for i in train])
    return clf.score(vec.transform([text(i) for i in test]), [i["label"] for i in test])


def test_bag_of_words_is_clearly_below_ceiling():
    """Negation, contrast and monotonicity defeat a unigram logistic regression (measured:
    sst2 about 0.65, nli about 0.41 of a 1.0 ceiling; chance 0.5 and 0.33)."""
    assert _bow_accuracy("sst2") < 0.75
    assert _bow_accuracy("nli") < 0.55


def test_text_twin_of_an_existing_speech_corpus(tmp_path):
    """A speech corpus written before text existed gets its text on first use, beside it;
    the speech directory is not changed."""
    speech = tmp_path / "synth" / "synth-tiny-seed3"
    (speech / "manifests").mkdir(parents=True)
    (speech / "meta.json").write_text(json.dumps({"size": "tiny", "seed": 3}))
    before = _hashes(speech)
    corpus = Corpus(name=speech.name, root=speech, meta={"size": "tiny", "seed": 3})
    items = text_items(corpus, "text-sst2", "dev")
    assert len(items) == T.TEXT_SIZES["tiny"]["sst2"][1] and items[0]["_line"] == 1
    assert _hashes(speech) == before
    twin = tmp_path / "synth" / T.text_dir_name("tiny", 3)
    stamp = (twin / "meta.json").stat().st_mtime_ns
    assert T.ensure_text_corpus(tmp_path / "synth", "tiny", 3) == twin
    assert (twin / "meta.json").stat().st_mtime_ns == stamp  # idempotent: not rewritten
    with pytest.raises(ConfigError, match="no 'text-foo' subset"):
        text_items(corpus, "text-foo", "train")


def test_synth_generation_writes_the_text_twin(tiny_corpus):
    twin = tiny_corpus.root.parent / T.text_dir_name("tiny", 0)
    assert (twin / "meta.json").is_file()
    assert json.loads((twin / "meta.json").read_text())["modality"] == "text"


def test_non_text_corpus_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="has no text"):
        text_items(Corpus(name="librispeech", root=tmp_path, meta={}), "text-sst2", "train")


# --------------------------------------------------------------------------- readers

def _cfg(name, root, **kw):
    return OmegaConf.create({"name": name, "root": str(root), "rescan": False, **kw})


def test_glue_tsv_readers(tmp_path):
    sst = tmp_path / "glue" / "SST-2"
    sst.mkdir(parents=True)
    rows = "".join(f"a {'fine' if i % 2 else 'dull'} film number {i}\t{i % 2}\n" for i in range(40))
    (sst / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (sst / "dev.tsv").write_text("sentence\tlabel\nit is \"great\"\t1\nno\t0\n")
    corpus = load_corpus(_cfg("glue", tmp_path / "glue", task="SST-2", dev_fraction=0.2),
                         tmp_path / "data", progress=False)
    train, dev = text_items(corpus, "text-sst2", "train"), text_items(corpus, "text-sst2", "dev")
    assert len(train) + len(dev) == 40 and dev and corpus.meta["glue_task"] == "SST-2"
    test = text_items(corpus, "text-sst2", "test")
    assert [(t["text"], t["label"]) for t in test] == [('it is "great"', "1"), ("no", "0")]

    cola = tmp_path / "CoLA"  # root may be the task folder; CoLA has no header
    cola.mkdir()
    (cola / "train.tsv").write_text("".join(f"src\t{i % 2}\t\tsentence {i}\n" for i in range(30)))
    (cola / "dev.tsv").write_text("src\t1\t\tok\nsrc\t0\t*\tbad\n")
    corpus = load_corpus(_cfg("glue", cola, task="CoLA"), tmp_path / "data", progress=False)
    assert text_items(corpus, "text-sst2", "test")[1]["text"] == "bad"

    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (mrpc / "train.tsv").write_text(head + "".join(f"{i % 2}\t1\t2\tleft {i}\tright {i}\n"
                                                   for i in range(30)))
    (mrpc / "dev.tsv").write_text(head + "1\t1\t2\tleft\n")  # one field short
    with pytest.raises(ManifestError, match=r"MRPC/dev.tsv:2: expected at least 5"):
        load_corpus(_cfg("glue", mrpc, task="MRPC"), tmp_path / "data", progress=False)
    with pytest.raises(ConfigError, match="valid GLUE tasks"):
        load_corpus(_cfg("glue", mrpc, task="MRPPC"), tmp_path / "data", progress=False)


def test_squad_reader(tmp_path):
    ctx = "anna bought a red apple in the kitchen ."
    def squad(qs):
        return {"version": "1.1", "data": [{"title": "t", "paragraphs": [
            {"context": ctx, "qas": qs}]}]}
    good = [{"id": f"q{i}", "question": "what did anna buy ?",
             "answers": [{"text": "a red apple", "answer_start": 12}]} for i in range(30)]
    (tmp_path / "train-v1.1.json").write_text(json.dumps(squad(good)))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(squad(good[:2])))
    corpus = load_corpus(_cfg("squad", tmp_path), tmp_path / "data", progress=False)
    test = text_items(corpus, "text-qa", "test")
    assert test[0]["answers"] == [{"text": "a red apple", "start": 12}]
    assert test[0]["text_pair"] == ctx
    bad = [{"id": "qx", "question": "q", "answers": [{"text": "apple", "answer_start": 0}]}]
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(squad(bad)))
    with pytest.raises(ManifestError, match="question 'qx'"):
        load_corpus(_cfg("squad", tmp_path, rescan=True), tmp_path / "data", progress=False)


def test_conllu_reader(tmp_path):
    sent = ("# sent_id = s{n}\n1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n1\tdo\tdo\tAUX\t_\t_\t0\t_\t_\t_\n"
            "2\tn't\tnot\tPART\t_\t_\t1\t_\t_\t_\n3\tgo\tgo\tVERB\t_\t_\t1\t_\t_\t_\n"
            "3.1\tx\tx\tX\t_\t_\t_\t_\t_\t_\n\n")
    for split in ("train", "dev", "test"):
        (tmp_path / f"en_x-ud-{split}.conllu").write_text("".join(sent.format(n=i)
                                                                  for i in range(3)))
    corpus = load_corpus(_cfg("conllu", tmp_path), tmp_path / "data", progress=False)
    item = text_items(corpus, "text-pos", "dev")[0]
    assert item["words"] == ["do", "n't", "go"] and item["tags"] == ["AUX", "PART", "VERB"]
    assert item["id"] == "s0"
    (tmp_path / "en_x-ud-dev.conllu").write_text("1\tdo\tdo\tAUX\n\n")
    with pytest.raises(ManifestError, match=r"en_x-ud-dev.conllu:1: expected 10"):
        load_corpus(_cfg("conllu", tmp_path, rescan=True), tmp_path / "data", progress=False)
