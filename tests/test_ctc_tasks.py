"""The CTC tasks: best-path decoding by hand, and the ASR probe can learn (it overfits a
handful of utterances to a low CER), so tokenization, loss and decoding fit together."""

from __future__ import annotations

import torch

from downstream.base import task_from_config
from downstream.ctc import greedy_decode
from speechssl.features import collate_features, extract_features
from speechssl.featurizer import Featurizer
from speechssl.metrics import cer
from speechssl.train import ProbeModel
from speechssl.upstream import build_upstream


def test_greedy_decode_merges_repeats_then_drops_blanks():
    # frames: a a _ a b b _  (blank=0, a=1, b=2) -> a a b
    path = torch.tensor([1, 1, 0, 1, 2, 2, 0, 2])
    log_probs = torch.nn.functional.one_hot(path, 3).float().log().unsqueeze(0)
    assert greedy_decode(log_probs, torch.tensor([7])) == [[1, 1, 2]]  # last frame is padding
    assert greedy_decode(log_probs, torch.tensor([8])) == [[1, 1, 2, 2]]


def test_asr_probe_overfits_a_few_utterances(make_cfg, tiny_corpus):
    torch.manual_seed(0)
    cfg = make_cfg("downstream=asr", "downstream.dropout=0.0")
    task = task_from_config(cfg.downstream)
    items = tiny_corpus.items("asr", "train")[:2]  # two: 0 % CER in 400 steps (four: 7 %)
    task.setup(items)
    feats = extract_features(build_upstream("fbank"), items, torch.device("cpu"), progress=False)
    model = ProbeModel(Featurizer(1), task.build_probe(feats[0].shape[2]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    layers, lengths = collate_features(feats, list(range(len(items))), torch.device("cpu"))
    batch = {"items": items}
    for _ in range(400):
        loss = task.loss(model.head, model.featurizer(layers), lengths, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        hyps = task.predict(model.head, model.featurizer(layers), lengths, batch)
    refs = [task.reference(it) for it in items]
    assert cer(refs, hyps) < 40.0, (refs, hyps)  # all-blank output gives 100 %
