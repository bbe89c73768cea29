"""In-context learning with the gpt upstream (speechssl/text/fewshot.py, mode=fewshot)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechssl.errors import ConfigError
from speechssl.text.fewshot import InContextClassifier, draw_demonstrations, render, run_fewshot

TINY_GPT = ["upstream=gpt", "downstream=sst2", "upstream.hidden_size=32", "upstream.num_layers=2",
            "upstream.ff_size=64", "upstream.pretrain.steps=20", "fewshot.test_items=12",
            "fewshot.seeds=2", "fewshot.shots=[0,2]"]
TRAIN = [{"text": f"t{i}", "label": "pos" if i % 3 else "neg"} for i in range(30)]


def test_demonstrations_are_balanced_and_follow_the_seed():
    demos = draw_demonstrations(TRAIN, 4, np.random.default_rng([0, 5]))
    assert sorted(d["label"] for d in demos) == ["neg", "neg", "pos", "pos"]
    again = draw_demonstrations(TRAIN, 4, np.random.default_rng([0, 5]))
    assert demos == again
    other = draw_demonstrations(TRAIN, 4, np.random.default_rng([1, 5]))
    assert [d["text"] for d in other] != [d["text"] for d in demos]
    assert draw_demonstrations(TRAIN, 0, np.random.default_rng(0)) == []


def test_template_renders_demonstrations_and_the_query():
    assert render("{text} it was {label}", "a b", "good") == "a b it was good"
    assert render("{text} it was {label}", "a b", None) == "a b it was"


@pytest.fixture(scope="module")
def gpt(tiny_corpus, tmp_path_factory):
    """A small gpt with a tokenizer trained on the tiny corpus (no LM training needed)."""
    from speechssl.upstream import build_upstream

    torch.manual_seed(0)
    lm = build_upstream("gpt", hidden_size=32, num_layers=2, num_heads=2, ff_size=64)
    lm.prepare(tiny_corpus, tmp_path_factory.mktemp("gpt"), "cpu")
    return lm.eval()


def test_label_scores_are_the_summed_log_probabilities_of_the_label_tokens(gpt):
    clf = InContextClassifier(gpt, verbalizer={"positive": "good", "negative": "bad"})
    demos = [{"text": "the dog ran", "label": "positive"}]
    prompt = clf.prompt(demos, "the cat sat")
    tok = gpt.tokenizer
    assert prompt[0] == tok.cls_id and prompt.count(tok.sep_id) == 1
    scores = clf.label_scores(prompt, ["positive", "negative"])
    for score, word in zip(scores, ["good", "bad"], strict=True):
        ids = prompt + clf.tokens(word)
        with torch.no_grad():
            logp = F.log_softmax(gpt.lm_logits(torch.tensor([ids]), torch.tensor([len(ids)])), -1)
        ref = sum(float(logp[0, len(prompt) + j - 1, t]) for j, t in enumerate(clf.tokens(word)))
        assert float(score) == pytest.approx(ref, abs=1e-4)


def test_fewshot_mode_is_deterministic_and_updates_no_weight(make_cfg, tmp_path):
    from speechssl.data.corpus import load_corpus
    from speechssl.upstream.load import load_upstream

    cfg = make_cfg("mode=fewshot", *TINY_GPT)
    first = run_fewshot(cfg)
    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=False)
    lm, _ = load_upstream(cfg, corpus, torch.device("cpu"))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    second = run_fewshot(cfg)
    assert first["accuracy"] == second["accuracy"]
    assert set(first["accuracy"]) == {"0", "2"} and len(first["accuracy"]["2"]["per_seed"]) == 2
    assert all(0 <= a <= 100 for v in first["accuracy"].values() for a in v["per_seed"])
    lm2, _ = load_upstream(cfg, corpus, torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in lm2.state_dict().items())
    written = list((tmp_path / "outputs" / "fewshot").glob("gpt-*-sst2.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["items"] == 12


def test_fewshot_refuses_a_masked_lm_and_a_bad_template(gpt):
    from speechssl.upstream import build_upstream

    with pytest.raises(ConfigError, match="causal LM"):
        InContextClassifier(build_upstream("bert", hidden_size=32, num_layers=1, num_heads=2,
                                           ff_size=64))
    with pytest.raises(ConfigError, match="end with"):
        InContextClassifier(gpt, template="{label}: {text}")


def test_an_unknown_label_word_is_a_config_error(gpt):
    clf = InContextClassifier(gpt, verbalizer={"positive": "жж"})
    with pytest.raises(ConfigError, match="жж"):
        clf.label_scores(clf.prompt([], "the cat sat"), ["positive", "negative"])
