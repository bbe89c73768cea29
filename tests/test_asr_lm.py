"""ASR with a word n-gram LM: the Kneser-Ney ARPA model (hand-worked probabilities, proper
distributions, read back by KenLM), and beam search that follows the LM where greedy
decoding does not; then an ASR cell with decoder=beam end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from downstream.asr import SpeechRecognition
from downstream.ctc import greedy_decode
from downstream.lm import (
    append_word_end,
    kneser_ney,
    read_arpa,
    to_arpa,
    write_arpa,
)
from speechssl.errors import ConfigError
from speechssl.train import train_cell


def p(lm, word, *context):
    return 10 ** lm.log10_prob(word, context)


def test_kneser_ney_bigram_hand_worked():
    # "<s> a b </s>", "<s> b </s>". Unigram continuation counts: a 1 (<s>), b 2 (<s>, a),
    # </s> 1 (b); D1 = n1/(n1+2 n2) = 2/4. Vocabulary a, b, </s>, <unk> (uniform 1/4);
    # back-off mass D1 * 3 types / 4 = 0.375.
    lm = kneser_ney([["a", "b"], ["b"]], order=2)
    assert p(lm, "a") == pytest.approx(0.5 / 4 + 0.375 / 4)  # 0.21875
    assert p(lm, "b") == pytest.approx(1.5 / 4 + 0.375 / 4)  # 0.46875
    assert p(lm, "</s>") == pytest.approx(0.21875)
    assert p(lm, "<unk>") == pytest.approx(0.09375) == p(lm, "never-seen")
    # bigrams: raw counts 1, 1, 1, 2 -> D2 = 3/5; context b: 1 type, 2 tokens, gamma 0.3
    assert p(lm, "</s>", "b") == pytest.approx((2 - 0.6) / 2 + 0.3 * 0.21875)
    assert p(lm, "a", "b") == pytest.approx(0.3 * 0.21875)  # unseen bigram backs off
    assert p(lm, "b", "<s>") == pytest.approx((1 - 0.6) / 2 + 0.6 * 0.46875)
    assert p(lm, "b", "a") == pytest.approx(0.4 + 0.6 * 0.46875)
    arpa = to_arpa(lm)
    assert "ngram 1=5\nngram 2=4\n" in arpa
    assert "-99.000000\t<s>\t-0.221849" in arpa  # log10 0.6, the back-off weight of <s>


SENTENCES = [s.split() for s in ["the cat sat", "the cat ate the rat", "a rat sat",
                                 "the dog sat on the cat", "a cat"]]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_gives_a_distribution(order):
    lm = kneser_ney(SENTENCES, order)
    words = ["<s>", "the", "cat", "rat", "sat", "on", "zebra"]
    for n in range(order):
        for context in itertools.product(words, repeat=n):
            total = sum(p(lm, w, *context) for w in lm.vocab)
            assert total == pytest.approx(1.0, abs=1e-9), context


def test_arpa_round_trip_and_errors(tmp_path):
    lm = kneser_ney(SENTENCES, 3)
    back = read_arpa(write_arpa(lm, tmp_path / "lm.arpa"))
    assert back.order == 3 and back.vocab == lm.vocab
    for context in [(), ("the",), ("<s>", "the"), ("cat", "sat"), ("zebra", "a")]:
        for w in lm.vocab:
            assert back.log10_prob(w, context) == pytest.approx(lm.log10_prob(w, context),
                                                                abs=1e-5)
    bad = tmp_path / "bad.arpa"
    text = to_arpa(lm)
    line = next(x for x in text.splitlines() if "\t<s> the\t" in x)
    bad.write_text(text.replace(line, "x" + line))
    with pytest.raises(ConfigError, match=r"bad.arpa:\d+: malformed 2-gram line 'x-"):
        read_arpa(bad)
    bad.write_text(text.replace(line + "\n", ""))
    with pytest.raises(ConfigError, match=r"bad.arpa: header says \d+ 2-grams"):
        read_arpa(bad)
    with pytest.raises(ConfigError, match="no such ARPA file"):
        read_arpa(tmp_path / "missing.arpa")
    with pytest.raises(ConfigError, match="lm_order"):
        kneser_ney(SENTENCES, 0)


def test_kenlm_scores_our_arpa_like_we_do(tmp_path):
    pytest.importorskip("flashlight.lib.text")
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    lm = kneser_ney(SENTENCES, 3)
    words = Dictionary()
    for w in lm.vocab:
        words.add_entry(w)
    kenlm = KenLM(str(write_arpa(lm, tmp_path / "lm.arpa")), words)
    state, context = kenlm.start(False), ["<s>"]
    for w in ["the", "rat", "ate", "a", "cat", "zebra", "sat"]:
        state, score = kenlm.score(state, words.get_index(w if w in lm.vocab else "<unk>"))
        assert score == pytest.approx(lm.log10_prob(w, context), abs=1e-5), w
        context.append(w)
    assert kenlm.finish(state)[1] == pytest.approx(lm.log10_prob("</s>", context), abs=1e-5)


def test_append_word_end():
    log_probs = torch.zeros(2, 3, 4)
    out, n = append_word_end(log_probs, torch.tensor([3, 1]), sil=1)
    assert out.shape == (2, 4, 4) and n.tolist() == [4, 2]
    assert out[0, 3].argmax() == 1 and out[1, 1].argmax() == 1  # the boundary frames
    assert out[0, 3].max() == 0.0 and out[0, 3].min() < -1e3  # log 1 and "log 0"
    assert torch.equal(out[:, :3].clone().index_put_((torch.tensor([1]), torch.tensor([1])),
                                                     log_probs[1, 1]), log_probs)


def _emissions(vocab, frames):
    """(1, T, V) log-probs: each frame a {token: probability} dict, the rest near zero."""
    em = torch.full((len(frames), len(vocab)), 1e-4)
    for t, frame in enumerate(frames):
        for token, prob in frame.items():
            em[t, vocab.index(token)] = prob
    return (em / em.sum(-1, keepdim=True)).log().unsqueeze(0)


def test_beam_search_with_lm_picks_the_lm_favoured_word(tmp_path):
    pytest.importorskip("flashlight.lib.text")
    train = [{"text": "the cat"}] * 5 + [{"text": "the cap"}]
    frames = [{"t": 1}, {"h": 1}, {"e": 1}, {" ": 1}, {"c": 1}, {"<blank>": 1}, {"a": 1},
              {"p": 0.55, "t": 0.45}]  # acoustics slightly prefer "cap"
    results = {}
    for lm_weight in (0.0, 2.0):
        task = SpeechRecognition(decoder="beam", lm_order=2, lm_weight=lm_weight, beam_size=8,
                                 lm_dir=str(tmp_path / "lm"))
        task.setup(train)
        assert task.vocab == ["<blank>", " ", "a", "c", "e", "h", "p", "t"]
        log_probs = _emissions(task.vocab, frames)
        greedy = task.join([task.vocab[i] for i in greedy_decode(log_probs, torch.tensor([8]))[0]])
        assert greedy == "the cap"
        results[lm_weight] = task.beam_search(log_probs, torch.tensor([8]))
    assert results == {0.0: ["the cap"], 2.0: ["the cat"]}
    arpa, lexicon = task.lm_files
    assert arpa.parent.parent == tmp_path / "lm" and read_arpa(arpa).order == 2
    assert lexicon.read_text().splitlines() == ["cap\tc a p |", "cat\tc a t |", "the\tt h e |"]


def test_asr_decoder_options_are_checked():
    with pytest.raises(ConfigError, match="downstream.decoder must be one of greedy, beam"):
        SpeechRecognition(decoder="viterbi")
    with pytest.raises(ConfigError, match="downstream.lm_order"):
        SpeechRecognition(decoder="beam", lm_order=0)
    with pytest.raises(ConfigError, match="downstream.beam_size"):
        SpeechRecognition(decoder="beam", beam_size=2.5)
    task = SpeechRecognition(decoder="beam", lm_dir=None)
    task.setup([{"text": "hello"}])
    with pytest.raises(ConfigError, match="word boundaries"):
        task.decoder_tokens()


def test_asr_beam_cell(make_cfg):
    pytest.importorskip("flashlight.lib.text")
    cfg = make_cfg("upstream=fbank", "downstream=asr", "downstream.decoder=beam",
                   "downstream.beam_size=8", "downstream.hidden_size=32",
                   "downstream.proj_dim=32", "downstream.optim.max_steps=20",
                   "downstream.optim.eval_every=20")
    row = train_cell(cfg)
    assert row["task"] == "asr" and row["metric"] == "wer"
    assert set(json.loads(row["metrics_json"])["test"]) == {"wer", "cer"}
    arpas = list((Path(cfg.out_dir) / "lm").glob("*/lm.arpa"))
    assert len(arpas) == 1 and read_arpa(arpas[0]).order == 3
