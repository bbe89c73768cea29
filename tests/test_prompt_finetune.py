"""LM-BFF prompt-based fine-tuning against [CLS] + linear (speechssl/text/prompt_finetune.py)."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.text.finetune import balanced_subset
from speechssl.text.prompt_finetune import PromptModel

OPTS = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64}
WORDS = {"positive": "great", "negative": "terrible"}


@pytest.fixture(scope="module")
def bert(tiny_corpus, tmp_path_factory):
    from speechssl.upstream import build_upstream

    torch.manual_seed(0)
    model = build_upstream("bert", **OPTS)
    model.prepare(tiny_corpus, tmp_path_factory.mktemp("bert"), "cpu")
    return model.eval()


def test_the_class_logits_are_the_label_words_mlm_logits_at_the_mask(bert):
    model = PromptModel(bert, ["negative", "positive"], WORDS)
    demos = [{"text": "a sad dog", "label": "negative"}, {"text": "a nice cat", "label": "positive"}]
    ids = model.encode("the dog ran", demos)
    tok = bert.tokenizer
    assert int((ids == tok.mask_id).sum()) == 1 and int((ids == tok.sep_id).sum()) == 3
    word = tok.tokenizer.encode("great", add_special_tokens=False).ids[0]
    assert word in ids.tolist()  # the positive demonstration carries its label word
    with torch.no_grad():
        got = model(ids[None], torch.tensor([len(ids)]))
        h = bert(ids[None], torch.tensor([len(ids)])).hidden_states[-1]
        at = int((ids == tok.mask_id).nonzero())
        full = bert.mlm_logits(h[:, at])[0]
    assert torch.allclose(got[0], full[model.word_ids])


def test_label_words_must_be_single_known_tokens(bert):
    with pytest.raises(ConfigError, match="not one token"):
        PromptModel(bert, ["negative", "positive"], {"positive": "жж"})
    with pytest.raises(ConfigError, match="one \\[MASK\\]"):
        PromptModel(bert, ["negative", "positive"], WORDS, template="{text} it was")


def test_balanced_subset_follows_the_seed():
    items = [{"id": i, "label": "a" if i % 4 else "b"} for i in range(40)]
    sub = balanced_subset(items, 6, seed=0)
    assert sorted(it["label"] for it in sub) == ["a", "a", "a", "b", "b", "b"]
    assert sub == balanced_subset(items, 6, seed=0) != balanced_subset(items, 6, seed=1)


def test_prompt_finetune_mode_end_to_end(make_cfg, tmp_path):
    from speechssl.text.prompt_finetune import run_prompt_finetune

    cfg = make_cfg("mode=prompt_finetune", "upstream=bert", "downstream=sst2",
                   *[f"upstream.{k}={v}" for k, v in OPTS.items()], "upstream.pretrain.steps=10",
                   "prompt_finetune.steps=4", "prompt_finetune.train_items=[8]",
                   "prompt_finetune.test_items=20")
    result = run_prompt_finetune(cfg)
    assert set(result["accuracy"]["8"]) == {"prompt", "head"}
    written = list((tmp_path / "outputs" / "prompt_finetune").glob("bert-*-sst2.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["test_items"] == 20
