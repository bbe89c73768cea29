"""The tokenizer and the text upstreams: BERT's masking and sentence-pair examples, GPT's
causality, pre-training through the shared loop, checkpoint reload, and upstream=hf for
a randomly initialized BERT saved to a temporary directory."""

from __future__ import annotations

import pytest
import torch

from speechssl.checkpoint import load_weights, save_weights, state_hash
from speechssl.data.synth.text_corpus import plan_text
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.text.data import collate_text, pad_ids
from speechssl.text.tokenizer import TextTokenizer, train_wordpiece
from speechssl.upstream import build_upstream
from speechssl.upstream.bert import make_pair_batch, mlm_corrupt, segment_ids

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, ff_size=64, dropout=0.0,
             vocab_size=1200, max_length=128)


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    items = plan_text("tiny", 0)["text-pretrain"]["train"]
    texts = [t for it in items for t in (it["text"], it["text_pair"])]
    return TextTokenizer.from_json(train_wordpiece(texts, 1200).to_str())


def _model(name: str, tokenizer, **kw):
    torch.manual_seed(0)
    m = build_upstream(name, **{**SMALL, **kw})
    m.set_tokenizer(tokenizer)
    return m


def _batch(tokenizer, items):
    return collate_text([{"index": i, "item": it, "ids": torch.tensor(tokenizer.encode(it).ids)}
                         for i, it in enumerate(items)])


def test_tokenizer_pairs_words_and_offsets(tokenizer):
    assert tokenizer.vocab_size <= 1200 and tokenizer.pad_id == 0 and tokenizer.mask_id == 4
    enc = tokenizer.encode({"text": "who bought the apple ?",
                            "text_pair": "anna bought the apple ."})
    toks = [tokenizer.tokenizer.id_to_token(i) for i in enc.ids]
    assert toks[0] == "[CLS]" and toks.count("[SEP]") == 2 and toks[-1] == "[SEP]"
    sep = toks.index("[SEP]")
    assert set(enc.sequence_ids[1:sep]) == {0} and set(enc.sequence_ids[sep + 1:-1]) == {1}
    passage = "anna bought the apple ."
    pieces = [passage[a:b] for (a, b), s in zip(enc.offsets, enc.sequence_ids, strict=True)
              if s == 1]
    assert "".join(pieces) == passage.replace(" ", "")
    words = tokenizer.encode({"words": ["the", "teachers", "sleep"], "tags": ["DET"] * 3})
    assert words.word_ids[0] is None and words.word_ids[1] == 0 and words.word_ids[-2] == 2
    with pytest.raises(SpeechSSLError, match="needs a 'text' string"):
        tokenizer.encode({"id": "x", "label": "1"})


def test_segment_ids_follow_the_first_sep():
    ids = torch.tensor([[2, 7, 8, 3, 9, 3, 0], [2, 7, 3, 0, 0, 0, 0]])
    assert segment_ids(ids, 3).tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]]


def test_mlm_masking_is_15_percent_80_10_10():
    g = torch.Generator().manual_seed(0)
    B, T = 64, 100
    ids = torch.randint(5, 500, (B, T))
    ids[:, 0], ids[:, -1] = 2, 3
    lengths = torch.full((B,), T)
    lengths[0] = 50  # padding is never chosen
    special = (ids == 2) | (ids == 3)
    out, labels = mlm_corrupt(ids, lengths, special, mask_id=4, vocab_low=5, vocab_high=500, g=g)
    chosen = labels != -100
    assert not chosen[0, 50:].any() and not chosen[special].any()
    assert chosen.sum(1)[1:].float().mean() == pytest.approx(0.15 * 98, abs=1)
    masked = (out == 4) & chosen
    kept = (out == ids) & chosen
    n = chosen.sum().item()
    assert masked.sum().item() / n == pytest.approx(0.8, abs=0.03)
    assert kept.sum().item() / n == pytest.approx(0.1 + 0.1 / 495, abs=0.03)
    assert (labels[chosen] == ids[chosen]).all() and (out[~chosen] == ids[~chosen]).all()


def test_sop_and_nsp_examples():
    g = torch.Generator().manual_seed(1)
    rows = [torch.tensor([2, 10 + b, 11 + b, 3, 20 + b, 3]) for b in range(8)]
    ids, lengths = pad_ids(rows)
    new, n, labels = make_pair_batch(ids, lengths, "sop", 2, 3, 0, g)
    for b in range(8):
        row = new[b, : n[b]].tolist()
        expect = [2, 20 + b, 3, 10 + b, 11 + b, 3] if labels[b] else rows[b].tolist()
        assert row == expect
    assert 0 < labels.sum() < 8
    new, n, labels = make_pair_batch(ids, lengths, "nsp", 2, 3, 0, g)
    for b in range(8):
        second = new[b, : n[b]].tolist()[-2]
        assert second == (20 + (b + 1) % 8 if labels[b] else 20 + b)


def test_bert_layers_padding_and_reload(tokenizer, tmp_path):
    m = _model("bert", tokenizer).eval()
    items = [{"text": "anna bought the apple"}, {"text": "the dog slept",
                                                 "text_pair": "then it ran in the park"}]
    batch = _batch(tokenizer, items)
    with torch.no_grad():
        out = m(batch["tokens"], batch["lengths"])
        alone = m(batch["tokens"][:1, : batch["lengths"][0]], batch["lengths"][:1])
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape[-1] == 32
    n = int(batch["lengths"][0])
    for a, b in zip(out.hidden_states, alone.hidden_states, strict=True):  # padding is ignored
        torch.testing.assert_close(a[0, :n], b[0], atol=1e-5, rtol=1e-5)
    save_weights(tmp_path / "bert.safetensors", m)
    fresh = build_upstream("bert", **SMALL).eval()
    load_weights(tmp_path / "bert.safetensors", fresh)
    assert fresh.tokenizer.to_json() == m.tokenizer.to_json()
    assert state_hash(fresh) == state_hash(m)
    with torch.no_grad():
        again = fresh(batch["tokens"], batch["lengths"])
    for a, b in zip(out.hidden_states, again.hidden_states, strict=True):
        assert torch.equal(a, b)


def test_gpt_is_causal(tokenizer):
    m = _model("gpt", tokenizer).eval()
    ids = torch.tensor([tokenizer.encode({"text": "anna bought the red apple"}).ids])
    other = ids.clone()
    other[0, -2] = 7  # change a late token
    lengths = torch.tensor([ids.shape[1]])
    with torch.no_grad():
        a, b = m(ids, lengths).hidden_states, m(other, lengths).hidden_states
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x[0, :-2], y[0, :-2]) and not torch.equal(x[0, -2:], y[0, -2:])


@pytest.mark.parametrize("name,extra", [("bert", {"pair_task": "sop"}),
                                        ("bert", {"pair_task": "nsp"}), ("gpt", {})])
def test_pretrain_loss_goes_down(tokenizer, name, extra):
    m = _model(name, tokenizer, **extra).train()
    items = plan_text("tiny", 0)["text-pretrain"]["train"][:16]
    batch = _batch(tokenizer, items)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(20):
        out = m.pretrain_loss(batch["tokens"], batch["lengths"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    logs = set(out)
    assert ({"mlm_loss", f"{extra['pair_task']}_loss"} if name == "bert"
            else {"next_token_accuracy"}) <= logs


def test_bad_options_and_missing_tokenizer():
    with pytest.raises(ConfigError, match="pair_task"):
        build_upstream("bert", pair_task="xyz")
    m = build_upstream("bert", **SMALL)
    with pytest.raises(SpeechSSLError, match="no tokenizer yet"):
        m.encode({"text": "hello"})


def test_pretrain_through_the_loop_saves_tokenizer(make_cfg):
    from speechssl.data.corpus import load_corpus
    from speechssl.pretrain import pretrain
    from speechssl.upstream.load import load_upstream

    cfg = make_cfg("upstream=bert", "upstream.hidden_size=32", "upstream.num_layers=1",
                   "upstream.num_heads=2", "upstream.ff_size=64", "upstream.pretrain.steps=3",
                   "upstream.pretrain.batch_tokens=400", "upstream.pretrain.warmup_steps=1",
                   "upstream.pretrain.save_every=2")
    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=False)
    final = pretrain(cfg, corpus, torch.device("cpu"))
    assert (final.parent / "tokenizer.json").is_file()
    up, info = load_upstream(cfg, corpus, torch.device("cpu"))
    assert up.tokenizer.to_json() == (final.parent / "tokenizer.json").read_text()
    assert info.source == str(final) and up.modality == "text"


def save_hf_bert(root, tokenizer: TextTokenizer):
    """A random BertModel plus a BERT fast tokenizer with ``tokenizer``'s vocabulary."""
    transformers = pytest.importorskip("transformers")
    vocab = sorted(tokenizer.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (root / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in vocab))
    transformers.BertTokenizerFast(str(root / "vocab.txt")).save_pretrained(root)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(root)
    return model


def test_hf_bert_text_pairs_use_segments(tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    model = save_hf_bert(tmp_path, tokenizer)
    up = build_upstream("hf", path=str(tmp_path)).eval()
    item = {"text": "who bought the apple ?", "text_pair": "anna bought the apple ."}
    enc = up.encode(item)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)(item["text"], item["text_pair"],
                                                               return_tensors="pt")
    assert enc.ids == ref["input_ids"][0].tolist()
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        ours = up(ids, torch.tensor([len(enc.ids)])).hidden_states
        theirs = model(**ref, output_hidden_states=True).hidden_states
    assert ref["token_type_ids"].sum() > 0
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_albert_sharing_applies_one_layer_at_every_depth(tmp_path):
    """``share_layers`` (ALBERT, Lan et al., 2020): one layer's parameters at every depth, the
    checkpoint round trip keeps them shared, and a LoRA tuning gets one module per distinct
    layer."""
    from speechssl.checkpoint import load_weights, save_weights
    from speechssl.tuning import _lora
    from speechssl.upstream import build_upstream
    from speechssl.upstream.load import count_params

    opts = {"hidden_size": 32, "num_layers": 4, "num_heads": 2, "ff_size": 64, "vocab_size": 100}
    plain, shared = build_upstream("bert", **opts), build_upstream("bert", **opts, share_layers=True)
    per_layer = count_params(plain.encoder.layers[0])
    assert count_params(plain) - count_params(shared) == 3 * per_layer
    layers = shared.encoder.layers
    assert all(layer is layers[0] for layer in layers) and len(layers) == 4
    ids, n = torch.randint(5, 100, (2, 7)), torch.tensor([7, 5])
    assert len(shared(ids, n).hidden_states) == 5
    save_weights(tmp_path / "w.safetensors", shared)
    again = build_upstream("bert", **opts, share_layers=True)
    load_weights(tmp_path / "w.safetensors", again)
    assert again.encoder.layers[3] is again.encoder.layers[0]
    with torch.no_grad():
        a, b = shared.eval()(ids, n), again.eval()(ids, n)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
    trained = _lora(again.encoder, {"rank": 2, "alpha": 4.0, "dropout": 0.0})
    assert len(trained) == 2  # qkv and output LoRA of the one shared layer
