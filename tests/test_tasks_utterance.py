"""The utterance-level SUPERB tasks IC, SID and ER: labels, heads, the all-fields-right IC
accuracy, ER's fold option, and each task end to end on the tiny corpus."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import accuracy_score

import downstream.er
import downstream.ic
import downstream.sid  # noqa: F401  (registers the tasks even before downstream/__init__ lists them)
from downstream.base import build_task
from downstream.er import er_subset
from downstream.utterance import PooledMultiHead
from speechssl.errors import ConfigError, ManifestError
from speechssl.features import collate_features, extract_features
from speechssl.featurizer import Featurizer
from speechssl.train import ProbeModel, train_cell
from speechssl.upstream import build_upstream

BUDGET = ["downstream.optim.max_steps=20", "downstream.optim.eval_every=10"]


def test_pooled_multi_head_shapes_ignore_padding():
    head = PooledMultiHead(5, [3, 4, 2])
    x = torch.randn(2, 7, 5)
    lengths = torch.tensor([7, 4])
    out = head(x, lengths)
    assert [tuple(o.shape) for o in out] == [(2, 3), (2, 4), (2, 2)]
    x2 = x.clone()
    x2[1, 4:] = 100.0  # padding frames must not change the second utterance's logits
    for a, b in zip(out, head(x2, lengths), strict=True):
        assert torch.allclose(a, b)


def _ic_item(action, obj, location, line=1):
    return {"action": action, "object": obj, "location": location, "_manifest": "m.jsonl",
            "_line": line}


def test_ic_accuracy_needs_all_three_fields():
    task = build_task("ic")
    refs = [("bring", "shoes", "none"), ("activate", "lights", "kitchen"),
            ("deactivate", "music", "none"), ("increase", "heat", "bedroom")]
    preds = [("bring", "shoes", "none"),  # all right
             ("activate", "lights", "bedroom"),  # location wrong
             ("activate", "music", "none"),  # action wrong
             ("increase", "heat", "bedroom")]  # all right
    scores = task.score(preds, refs)
    assert scores["accuracy"] == pytest.approx(50.0)
    joint = [" ".join(p) for p in preds], [" ".join(r) for r in refs]
    assert scores["accuracy"] == pytest.approx(100 * accuracy_score(joint[1], joint[0]))
    assert scores["action_accuracy"] == pytest.approx(75.0)
    assert scores["object_accuracy"] == pytest.approx(100.0)
    assert scores["location_accuracy"] == pytest.approx(75.0)


def test_ic_labels_and_errors():
    task = build_task("ic")
    train = [_ic_item("bring", "shoes", "none"), _ic_item("activate", "lights", "kitchen")]
    task.setup(train)
    assert task.classes == [["activate", "bring"], ["lights", "shoes"], ["kitchen", "none"]]
    assert task.targets({"items": train}, "cpu").tolist() == [[1, 1, 1], [0, 0, 0]]
    with pytest.raises(ManifestError, match=r"m.jsonl:7: object 'socks' never occurs"):
        task.targets({"items": [_ic_item("bring", "socks", "none", line=7)]}, "cpu")
    with pytest.raises(ManifestError, match=r"m.jsonl:3: no 'location' field"):
        task.reference({"action": "bring", "object": "shoes", "_manifest": "m.jsonl", "_line": 3})


def test_ic_probe_learns_a_few_utterances(tiny_corpus):
    torch.manual_seed(0)
    task = build_task("ic")
    items = tiny_corpus.items("ic", "train")[:8]
    task.setup(items)
    feats = extract_features(build_upstream("fbank"), items, torch.device("cpu"), progress=False)
    model = ProbeModel(Featurizer(1), task.build_probe(feats[0].shape[2]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    layers, lengths = collate_features(feats, list(range(8)), torch.device("cpu"))
    batch = {"items": items}
    for _ in range(150):
        loss = task.loss(model.head, model.featurizer(layers), lengths, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        preds = task.predict(model.head, model.featurizer(layers), lengths, batch)
    assert task.score(preds, [task.reference(it) for it in items])["accuracy"] == 100.0


def test_sid_and_er_read_their_label_fields():
    sid, er = build_task("sid"), build_task("er")
    assert sid.subset == "sid" and sid.reference({"speaker": "spk03"}) == "spk03"
    assert er.subset == "er" and er.reference({"emotion": "sad"}) == "sad"
    with pytest.raises(ManifestError, match=r"x.jsonl:2: no 'emotion' field"):
        er.reference({"_manifest": "x.jsonl", "_line": 2})


class _RecordingCorpus:
    def __init__(self):
        self.asked = []

    def items(self, subset, split):
        self.asked.append((subset, split))
        return []


def test_er_fold_selects_the_iemocap_subset():
    assert er_subset(None) == "er" and er_subset(3) == "er-fold3"
    corpus = _RecordingCorpus()
    build_task("er", fold=5).splits(corpus)
    assert corpus.asked == [("er-fold5", "train"), ("er-fold5", "dev"), ("er-fold5", "test")]
    for bad in (0, 6, "2", 1.5, True):
        with pytest.raises(ConfigError, match="downstream.fold"):
            build_task("er", fold=bad)


@pytest.mark.parametrize("task,extra", [
    ("ic", ["action_accuracy", "object_accuracy", "location_accuracy"]),
    ("sid", []),
    ("er", []),
])
def test_utterance_task_cell(make_cfg, task, extra):
    row = train_cell(make_cfg("upstream=fbank", f"downstream={task}", *BUDGET))
    assert row["task"] == task and row["metric"] == "accuracy" and row["higher_is_better"] == 1
    assert 0.0 <= row["test_value"] <= 100.0
    test = json.loads(row["metrics_json"])["test"]
    assert set(test) == {"accuracy", *extra}


def test_a_mean_pool_probe_on_pooled_features_sees_what_it_sees_on_frames(tiny_corpus):
    """The pooled path (speechssl.features.mean_pooled): each item's mean vector per layer,
    fed as one frame, gives the loss and the predictions of the frames themselves, with the
    featurizer's weighted sum and standardisation in between (both commute with the mean)."""
    from speechssl.features import mean_pooled

    torch.manual_seed(0)
    items = tiny_corpus.items("ks", "train")[:6]
    for name in ("ks", "ic"):
        task = build_task(name)
        if name == "ic":
            items = tiny_corpus.items("ic", "train")[:6]
        task.setup(items)
        assert task.pooled_input
        frames = [torch.randn(3, 5 + 4 * i, 8) for i in range(6)]  # (L, T_i, D), float32
        layers, lengths = collate_features(frames, list(range(6)), torch.device("cpu"))
        [(_, pooled, ones)] = list(mean_pooled(iter([(list(range(6)), layers.half(),
                                                      lengths.tolist())])))
        assert pooled.shape == (3, 6, 1, 8) and ones == [1] * 6
        model = ProbeModel(Featurizer(3, 8, standardize=True), task.build_probe(8))
        model.featurizer.set_statistics(torch.randn(3, 8), torch.rand(3, 8) + 0.5)
        with torch.no_grad():
            model.featurizer.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
        batch = {"items": items}
        one = torch.ones(6, dtype=torch.long)
        on_frames = task.loss(model.head, model.featurizer(layers.half().float(), lengths),
                              lengths, batch)
        on_means = task.loss(model.head, model.featurizer(pooled.float(), one), one, batch)
        assert abs(on_frames.item() - on_means.item()) < 1e-2 * abs(on_frames.item())
        p_frames = task.predict(model.head, model.featurizer(layers.half().float(), lengths),
                                lengths, batch)
        p_means = task.predict(model.head, model.featurizer(pooled.float(), one), one, batch)
        assert p_frames == p_means


def test_projector_is_s3prls_per_frame_projection_before_the_mean():
    """``downstream.projector_dim`` (s3prl's utterance-level recipes: 256): a linear layer
    per frame, then the mean over valid frames; on the pooled vector it is the same function
    (the probe may train on pooled features). Bad values are ConfigErrors."""
    from downstream.utterance import PooledLinear

    torch.manual_seed(0)
    probe = PooledLinear(6, 3, projector_dim=4)
    x, lengths = torch.randn(2, 5, 6), torch.tensor([5, 3])
    framewise = torch.stack([probe.projector(x[b, :n]).mean(0) for b, n in enumerate([5, 3])])
    torch.testing.assert_close(probe(x, lengths), probe.linear(framewise))
    assert probe.linear.in_features == 4
    ks = build_task("ks", projector_dim=256)
    ks.setup([{"label": "yes"}, {"label": "no"}])
    assert ks.build_probe(8).projector.out_features == 256
    head = build_task("ic", projector_dim=5)
    head.setup([{"action": "a", "object": "o", "location": "l"}])
    assert all(h.in_features == 5 for h in head.build_probe(8).heads)
    assert build_task("er", fold=None, projector_dim=7).projector_dim == 7
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="downstream.projector_dim"):
            build_task("sid", projector_dim=bad)


def test_a_cell_with_the_projector_trains_on_pooled_features(make_cfg):
    row = train_cell(make_cfg("upstream=fbank", "downstream=ks", "downstream.projector_dim=16",
                              *BUDGET))
    assert 0.0 <= row["test_value"] <= 100.0 and row["trainable_params"] > 0


def test_sid_crops_train_on_frames(make_cfg):
    """``downstream.train_crop_seconds`` (s3prl's SID: 8 s): the probe trains on a random
    window of each utterance's frames, so not on pooled vectors; in eval, whole utterances."""
    task = build_task("sid", train_crop_seconds=0.2)
    assert task.pooled_input is False and build_task("sid").pooled_input is True
    task.frame_shift = 0.01
    task.setup([{"speaker": "a"}, {"speaker": "b"}])
    seen = []

    def probe(features, lengths):
        seen.append(lengths.tolist())
        return torch.zeros(len(lengths), 2, requires_grad=True)

    probe.training = True
    items = {"items": [{"speaker": "a"}, {"speaker": "b"}]}
    task.loss(probe, torch.randn(2, 50, 3), torch.tensor([50, 12]), items)
    assert seen[-1] == [20, 12]
    with pytest.raises(ConfigError, match="downstream.train_crop_seconds"):
        build_task("sid", train_crop_seconds=-1)
    row = train_cell(make_cfg("upstream=fbank", "downstream=sid",
                              "downstream.train_crop_seconds=1.0", *BUDGET))
    assert 0.0 <= row["test_value"] <= 100.0
