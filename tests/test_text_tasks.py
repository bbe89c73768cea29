"""The text tasks end to end through train_cell (bert pre-trained a few steps on the tiny
synthesized text; a random transformers BERT through upstream=hf; real-format GLUE files
with their metrics), and the pieces of the span / tagging probes on hand-worked cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from downstream.base import build_task
from downstream.text.common import encoding
from downstream.text.pos import first_subtokens
from downstream.text.qa import answer_tokens, best_span
from downstream.utterance import pool
from speechssl.errors import ConfigError, ManifestError
from speechssl.text.tokenizer import Encoded
from speechssl.train import train_cell

ARCH = ["upstream=bert", "upstream.hidden_size=32", "upstream.num_layers=2", "upstream.num_heads=2",
        "upstream.ff_size=64", "upstream.vocab_size=1200", "upstream.pretrain.steps=10",
        "upstream.pretrain.batch_tokens=600", "upstream.pretrain.warmup_steps=2"]
PROBE = ["downstream.optim.max_steps=60", "downstream.optim.eval_every=30", "downstream.optim.lr=1e-2"]


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


@pytest.mark.parametrize("task,metric,floor", [("sst2", "accuracy", 0.0), ("nli", "accuracy", 0.0),
                                               ("pos", "accuracy", 40.0), ("qa", "f1", 0.0)])
def test_text_task_end_to_end_with_bert(make_cfg, bert_ckpt, task, metric, floor):
    row = train_cell(make_cfg(*ARCH, f"upstream.ckpt={bert_ckpt}", f"downstream={task}", *PROBE))
    assert row["task"] == task and row["metric"] == metric and row["upstream"] == "bert"
    assert floor <= row["test_value"] <= 100.0 and not math.isnan(row["dev_value"])
    scores = json.loads(row["metrics_json"])["test"]
    if task == "qa":
        assert scores["exact_match"] <= scores["f1"]
    assert len(json.loads(row["layer_weights"])) == 3  # embeddings + 2 layers


def _save_hf_bert(root, vocab_words):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", "."] + sorted(vocab_words)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab))
    transformers.BertTokenizerFast(str(root / "vocab.txt")).save_pretrained(root)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(root)


@pytest.fixture
def hf_bert(tmp_path):
    from speechssl.data.synth import grammar as G
    from speechssl.data.synth.text_corpus import BAD, GOOD, HATE, LIKE

    words = G.vocabulary() | set(GOOD) | set(BAD) | {w for v in LIKE + HATE for w in v} | {
        "a", "an", "the", "did", "does", "do", "not", "will", "who", "what", "where", "but",
        "although", "even", "though", "is", "was", "are", "were", "am", "with", "beside",
        "because", "while", "i", "you", "we", "they", "he", "she", "my", "her", "his", "our",
        "this", "that", "these", "those", "some", "many", "very", "quite", "really", "later",
        "again", "early", "near", "behind", "in", "at", "outside", "every", "and", "then"}
    _save_hf_bert(tmp_path / "hf", words)
    return tmp_path / "hf"


@pytest.mark.parametrize("task", ["qa", "pos"])
def test_text_task_with_a_random_hf_bert(make_cfg, hf_bert, task):
    row = train_cell(make_cfg("upstream=hf", f"upstream.path={hf_bert}", f"downstream={task}",
                              *PROBE))
    assert row["upstream"] == "hf" and 0.0 <= row["test_value"] <= 100.0
    assert len(json.loads(row["layer_weights"])) == 3


def _glue(root, task, header, rows_train, rows_dev):
    d = root / task
    d.mkdir(parents=True)
    (d / "train.tsv").write_text(header + "".join(rows_train))
    (d / "dev.tsv").write_text(header + "".join(rows_dev))
    return root


def _glue_cfg(data_dir, tmp_path, *overrides):
    """The config of a cell on a GLUE copy (make_cfg's corpus.size=tiny fits synth only)."""
    from conftest import RECIPES

    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        return compose("config", overrides=[f"data_dir={data_dir}", f"out_dir={tmp_path / 'out'}",
                                            "progress=false", "device=cpu", "corpus=glue",
                                            *overrides, *PROBE])


def test_glue_cola_scored_by_matthews(data_dir, hf_bert, tmp_path):
    rows = [f"src\t{i % 2}\t\t{'the dog slept' if i % 2 else 'dog the slept'} {i % 7}\n"
            for i in range(60)]
    root = _glue(tmp_path / "glue", "CoLA", "", rows, rows[:20])
    row = train_cell(_glue_cfg(data_dir, tmp_path, "upstream=hf", f"upstream.path={hf_bert}",
                               "downstream=sst2", f"corpus.root={root}", "corpus.task=CoLA"))
    assert row["metric"] == "matthews" and -100.0 <= row["test_value"] <= 100.0
    assert {"matthews", "accuracy"} <= set(json.loads(row["metrics_json"])["test"])


def test_glue_stsb_is_regression_with_correlations(data_dir, hf_bert, tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = [f"{i}\tg\tf\ty\t{i}\ts\ts\tthe dog slept\tthe {'dog' if i % 2 else 'cat'} slept\t"
            f"{(i % 6) * 0.9:.1f}\n" for i in range(60)]
    root = _glue(tmp_path / "glue", "STS-B", head, rows, rows[:20])
    row = train_cell(_glue_cfg(data_dir, tmp_path, "upstream=hf", f"upstream.path={hf_bert}",
                               "downstream=nli", f"corpus.root={root}", "corpus.task=STS-B"))
    assert row["metric"] == "pearson"
    assert set(json.loads(row["metrics_json"])["test"]) == {"pearson", "spearman"}


# --------------------------------------------------------------------------- pieces

def test_best_span_respects_order_and_length():
    # best pair overall would be start 1 + end 0 = 14, but the end comes first
    start = torch.tensor([-9.0, 5.0, 1.0, 0.0, 4.0])
    end = torch.tensor([9.0, 0.0, 2.0, 0.0, 2.5])
    assert best_span(start, end, max_len=30) == (1, 4)  # 5 + 2.5
    assert best_span(start, end, max_len=2) == (1, 2)  # 5 + 2; (1, 4) is too long
    assert best_span(start, end, max_len=1) == (4, 4)  # 4 + 2.5


def test_answer_tokens_and_first_subtokens():
    # [CLS] who ? [SEP] anna bought a red apple [SEP]; passage "anna bought a red apple"
    enc = Encoded(ids=list(range(10)), word_ids=[None, 0, 1, None, 0, 1, 1, 2, 3, 4],
                  offsets=[(0, 0), (0, 3), (4, 5), (0, 0), (0, 4), (5, 8), (8, 11), (12, 13),
                           (14, 17), (18, 23)],
                  sequence_ids=[None, 0, 0, None, 1, 1, 1, 1, 1, 1])
    assert answer_tokens(enc, 12, 23) == (7, 9)  # "a red apple"
    assert answer_tokens(enc, 6, 8) == (5, 5)  # inside one token
    assert answer_tokens(enc, 40, 45) is None  # cut off by truncation
    assert first_subtokens([None, 0, 1, 1, 2, None]) == {0: 1, 1: 2, 2: 4}


def test_pooling():
    x = torch.arange(12.0).view(1, 4, 3)
    lengths = torch.tensor([3])
    assert pool(x, lengths, "cls").tolist() == [[0.0, 1.0, 2.0]]
    assert pool(x, lengths, "last").tolist() == [[6.0, 7.0, 8.0]]
    assert pool(x, lengths, "mean").tolist() == [[3.0, 4.0, 5.0]]


def test_bad_items_and_options_name_the_problem():
    with pytest.raises(ConfigError, match="pooling"):
        build_task("sst2", pooling="max")
    with pytest.raises(ConfigError, match="needs a text upstream|text tasks need"):
        encoding({"_manifest": "m.jsonl", "_line": 3, "text": "x"})
    qa = build_task("qa")
    with pytest.raises(ManifestError, match="m.jsonl:4"):
        qa.reference({"_manifest": "m.jsonl", "_line": 4, "text": "q", "text_pair": "abc",
                      "answers": [{"text": "abd", "start": 0}]})
    pos = build_task("pos")
    with pytest.raises(ManifestError, match="equal length"):
        pos.reference({"words": ["a", "b"], "tags": ["DET"]})


def test_modality_mismatch_is_a_config_error():
    from speechssl.features import extract_features
    from speechssl.upstream import build_upstream

    text = [{"id": "t1", "text": "anna slept", "label": "positive", "_manifest": "m.jsonl"}]
    audio = [{"id": "a1", "path": "/x.wav", "duration": 1.0}]
    with pytest.raises(ConfigError, match="reads audio but the task's items are text"):
        extract_features(build_upstream("fbank"), text, torch.device("cpu"), progress=False)
    bert = build_upstream("bert", hidden_size=32, num_layers=1, num_heads=2, ff_size=64)
    with pytest.raises(ConfigError, match="reads text but the task's items are audio"):
        extract_features(bert, audio, torch.device("cpu"), progress=False)
