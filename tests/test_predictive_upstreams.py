"""Predictive and bootstrapping upstreams (Issue 4): hubert (k-means targets, iterations 1
and 2) and data2vec (EMA teacher), including the pre-training loop's hooks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from speechssl.checkpoint import load_weights, save_weights
from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream

BACKBONE = {"conv_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
            "conv_pos_kernel": 16, "conv_pos_groups": 4, "dropout": 0.0,
            "attention_dropout": 0.0}
HUBERT = {**BACKBONE, "final_dim": 16, "num_clusters": 12, "feature_dropout": 0.0,
          "kmeans_n_init": 1, "kmeans_max_frames": 5000, "kmeans_utterances": 6}
DATA2VEC = {**BACKBONE, "top_k": 2, "ema_start": 0.9, "ema_end": 0.99, "ema_anneal_steps": 10}


@pytest.fixture(scope="module")
def tiny_items(tiny_corpus):
    return tiny_corpus.items("pretrain", "train")[:6]


@pytest.fixture(scope="module")
def tiny_batch(tiny_items):
    from speechssl.data.batching import AudioDataset, collate_audio

    batch = collate_audio([AudioDataset(tiny_items)[i] for i in range(4)])
    # one second from 0.5 s into each utterance: short enough for a few dozen fast steps
    return {"audio": batch["audio"][:, 8000:24000].contiguous(),
            "lengths": torch.full((4,), 16000)}


@pytest.fixture(scope="module")
def centroids(tiny_items):
    torch.manual_seed(0)
    return build_upstream("hubert", **HUBERT).fit_targets(tiny_items, torch.device("cpu"))[0]


def _hubert(centroids, **kw):
    up = build_upstream("hubert", **{**HUBERT, **kw})
    up.set_centroids(centroids)
    return up


def _train(up, batch, steps: int, lr: float, hook: bool = False) -> None:
    opt = torch.optim.Adam([p for p in up.parameters() if p.requires_grad], lr=lr)
    for step in range(1, steps + 1):
        out = up.pretrain_loss(batch["audio"], batch["lengths"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if hook:
            up.after_step(step)


def _fixed(up, batch) -> dict:
    torch.manual_seed(123)
    with torch.no_grad():
        return {k: float(v) for k, v in up.pretrain_loss(batch["audio"], batch["lengths"]).items()}


def test_hubert_targets_are_stable_and_printed(tiny_items, centroids, capsys):
    again, report = build_upstream("hubert", **HUBERT).fit_targets(tiny_items, torch.device("cpu"))
    assert torch.equal(again, centroids)  # fixed kmeans_seed: the same clusters
    assert centroids.shape == (12, 39)  # MFCC 13 + deltas + delta-deltas
    assert 1 < report["cluster_perplexity"] <= 12 and 0 <= report["speech_silence_pnmi"] <= 1
    # the synthetic corpus has phone alignments: purity against phones (and silence)
    assert report["phone_frames"] == report["frames"] and report["phones"] > 12
    assert 0 < report["phone_pnmi"] < 1 and 0 < report["phone_purity"] < 1
    assert "phone purity" in capsys.readouterr().out
    unaligned = [{k: v for k, v in it.items() if k != "alignment"} for it in tiny_items]
    report = build_upstream("hubert", **HUBERT).fit_targets(unaligned, torch.device("cpu"))[1]
    assert "phone_purity" not in report
    assert "no phone alignments" in capsys.readouterr().out


def test_hubert_targets_follow_the_label_rate(centroids, tiny_batch):
    up = _hubert(centroids).eval()
    x, n = tiny_batch["audio"][:2], tiny_batch["lengths"][:2]
    codes, m = up.codes(x, n)
    assert codes.shape == (2, int(m.max())) and (codes[0, : int(m[0])] >= 0).all()
    mfcc, _ = up.mfcc(x[:1, : int(n[0])], n[:1])
    from speechssl.nn.kmeans import assign

    # model frame t (20 ms) takes the cluster of MFCC frame 2t (10 ms)
    assert torch.equal(codes[0, :10], assign(mfcc[0, 0:20:2], centroids))


def test_hubert_loss_falls_on_masked_frames(centroids, tiny_batch):
    torch.manual_seed(0)
    up = _hubert(centroids).train()
    before = _fixed(up, tiny_batch)
    _train(up, tiny_batch, 20, 3e-3)
    after = _fixed(up, tiny_batch)
    assert after["loss_masked"] < 0.85 * before["loss_masked"], (before, after)
    assert after["accuracy_masked"] > 1 / 12  # above uniform guessing among 12 clusters


@pytest.mark.parametrize("name", ["hubert", "wav2vec2", "data2vec"])
def test_log_mel_frontend_replaces_the_conv_encoder(name, centroids, tiny_batch):
    """frontend=fbank (MelHuBERT's input): stacked log-mel frames at the conv stride, no
    encoder parameters, no feature penalty, and the transformer still learns from it."""
    from speechssl.nn.frontend import KaldiFrontend

    opts = {"hubert": HUBERT, "data2vec": DATA2VEC,
            "wav2vec2": {**BACKBONE, "final_dim": 16, "codebook_size": 8, "num_negatives": 4}}
    up = build_upstream(name, **opts[name], frontend="fbank", mel_stack=2)
    if name == "hubert":
        up.set_centroids(centroids)
    x, n = tiny_batch["audio"][:2], torch.tensor([16000, 11000])
    feats, m = up.eval().backbone.features(x, n)
    assert up.downsample_rate == 320 and feats.shape[-1] == 160
    assert torch.equal(m, up.backbone.features.output_lengths(n))
    assert m.tolist() == [49, 34]  # ceil(Kaldi frames / 2): 98 -> 49, 67 -> 34
    # frame t is 10 ms frames 2t and 2t + 1 side by side (global CMVN: identity before training)
    ref, _ = KaldiFrontend("fbank", normalize=False)(x[:1], n[:1])
    assert torch.allclose(feats[0, 3], ref[0, 6:8].reshape(-1))
    assert not [p for p in up.backbone.features.parameters()]
    torch.manual_seed(0)
    out = up.train().pretrain_loss(x, n)
    assert float(out.get("feature_penalty", 0.0)) == 0.0
    assert float(up.backbone.features.logmel.global_cmvn.count) == 98 + 67  # Kaldi frames seen
    out["loss"].backward()
    assert up.backbone.proj.weight.grad.abs().sum() > 0
    assert [h.shape[1] for h in up.eval()(x, n).hidden_states] == [49] * 3


def test_hubert_unmasked_weight_adds_the_unmasked_loss(centroids, tiny_batch):
    x, n = tiny_batch["audio"][:2], tiny_batch["lengths"][:2]
    torch.manual_seed(0)
    a = _hubert(centroids, feature_penalty=0.0)
    torch.manual_seed(5)
    out_a = a.pretrain_loss(x, n)
    assert out_a["loss"].item() == pytest.approx(out_a["loss_masked"].item(), rel=1e-6)
    a.unmasked_weight = 0.5
    torch.manual_seed(5)
    out_b = a.pretrain_loss(x, n)
    assert out_b["loss"].item() == pytest.approx(
        out_b["loss_masked"].item() + 0.5 * out_b["loss_unmasked"].item(), rel=1e-6)


def test_hubert_without_targets_says_so(tiny_batch):
    up = build_upstream("hubert", **HUBERT)
    with pytest.raises(ConfigError, match="k-means"):
        up.pretrain_loss(tiny_batch["audio"][:1], tiny_batch["lengths"][:1])
    with pytest.raises(ConfigError, match="teacher"):
        build_upstream("hubert", **HUBERT, iteration=2)
    with pytest.raises(ConfigError, match="not found"):
        build_upstream("hubert", **HUBERT, iteration=2, teacher="/nonexistent.safetensors")


def test_hubert_iteration_two_clusters_a_teacher_layer(centroids, tiny_items, tiny_batch,
                                                        tmp_path):
    torch.manual_seed(0)
    first = _hubert(centroids)
    path = tmp_path / "iter1.safetensors"
    save_weights(path, first, {"upstream": "hubert", "options": json.dumps(HUBERT)})
    second = build_upstream("hubert", **{**HUBERT, "num_clusters": 8}, iteration=2,
                            teacher=str(path))
    assert second.teacher_layer == 1 and second.centroids.shape == (8, 32)
    c2, report = second.fit_targets(tiny_items[:3], torch.device("cpu"))
    second.set_centroids(c2)
    codes, m = second.eval().codes(tiny_batch["audio"][:2], tiny_batch["lengths"][:2])
    feats = first.eval()(tiny_batch["audio"][:2], tiny_batch["lengths"][:2]).hidden_states[1]
    from speechssl.nn.kmeans import assign

    assert torch.equal(codes[0, : int(m[0])], assign(feats[0, : int(m[0])], c2))
    assert "teacher" not in " ".join(second.state_dict())  # the teacher is not saved with it


def test_hubert_clusters_another_upstreams_layer(tiny_items, tiny_batch, tmp_path):
    """A cheaper model as the teacher (apc, 10-ms frames): its layer is clustered, frame 2t
    gives the target of frame t (as MFCC's), and the centroids, whose width is known only
    once the teacher runs, survive a save and reload."""
    from speechssl.nn.kmeans import assign

    torch.manual_seed(0)
    apc_opts = {"hidden_size": 24, "num_layers": 2}
    apc = build_upstream("apc", **apc_opts).eval()
    path = tmp_path / "apc.safetensors"
    save_weights(path, apc, {"upstream": "apc", "options": json.dumps(apc_opts)})
    with pytest.raises(ConfigError, match="'apc' checkpoint: set upstream.teacher_layer"):
        build_upstream("hubert", **HUBERT, iteration=2, teacher=str(path))
    student = build_upstream("hubert", **{**HUBERT, "num_clusters": 8}, iteration=2,
                             teacher=str(path), teacher_layer=1)
    c, report = student.fit_targets(tiny_items[:3], torch.device("cpu"))
    assert student.label_ratio == 2 and c.shape == (8, 24)
    student.set_centroids(c)
    x, n = tiny_batch["audio"][:2], tiny_batch["lengths"][:2]
    codes, m = student.eval().codes(x, n)
    with torch.no_grad():
        h = apc(x, n).hidden_states[1]
    assert torch.equal(codes[0, : int(m[0])], assign(h[0, 0: 2 * int(m[0]): 2], c))
    save_weights(tmp_path / "s.safetensors", student)
    again = build_upstream("hubert", **{**HUBERT, "num_clusters": 8}, iteration=2,
                           teacher=str(path), teacher_layer=1)
    load_weights(tmp_path / "s.safetensors", again)
    assert torch.equal(again.centroids, c) and bool(again.fitted)
    assert torch.equal(again.eval().codes(x, n)[0], codes)
    wrong = build_upstream("hubert", **HUBERT, iteration=2, teacher=str(path), teacher_layer=7)
    with pytest.raises(ConfigError, match="teacher_layer=7: the apc teacher has hidden states 0..1"):
        wrong.fit_targets(tiny_items[:1], torch.device("cpu"))


def test_a_teachers_targets_are_computed_once_per_utterance(tiny_batch, tmp_path):
    """Iteration 2 keeps each utterance's ids: the teacher runs on a batch with an unseen
    utterance only, and an utterance met again in another batch gets the ids it had."""
    torch.manual_seed(0)
    apc_opts = {"hidden_size": 16, "num_layers": 2}
    path = tmp_path / "apc.safetensors"
    save_weights(path, build_upstream("apc", **apc_opts),
                 {"upstream": "apc", "options": json.dumps(apc_opts)})
    up = build_upstream("hubert", **{**HUBERT, "num_clusters": 4}, iteration=2,
                        teacher=str(path), teacher_layer=1)
    up.set_centroids(torch.randn(4, 16) * 0.1)
    calls = []
    teacher = up.teacher()
    teacher.register_forward_hook(lambda *a: calls.append(1))
    x, n = tiny_batch["audio"][:3].clone(), torch.tensor([16000, 12000, 9000])
    T = int(up.backbone.features.output_lengths(n).max())
    fresh = up._assign(*up.target_features(x, n), T)   # the ids without keeping: one call
    first = up.targets(x, n, T)                          # a second call: all three unseen
    frames = up.backbone.features.output_lengths(n).tolist()
    for b, f in enumerate(frames):
        assert torch.equal(first[b, :f], fresh[b, :f])
    assert len(calls) == 2
    again = up.targets(x, n, T)
    assert len(calls) == 2 and torch.equal(again, first)
    alone = up.targets(x[1:2, :12000], n[1:2], frames[1])  # another batch shape: kept ids
    assert len(calls) == 2 and torch.equal(alone[0], first[1, : frames[1]])
    batch_sizes = []
    teacher.register_forward_pre_hook(lambda m, args: batch_sizes.append(args[0].shape[0]))
    mixed = torch.cat([x[:1] * 0.5, x[1:2]])             # one new utterance, one kept
    got = up.targets(mixed, n[:2], frames[0])
    assert len(calls) == 3 and batch_sizes == [1]        # the teacher read the new one only
    assert torch.equal(got[1, : frames[1]], first[1, : frames[1]])
    up.set_centroids(torch.randn(4, 16))                  # new centroids: nothing is kept
    up.targets(x, n, T)
    assert len(calls) == 4


@pytest.mark.parametrize("name", ["hubert", "data2vec"])
def test_checkpoint_reloads_to_identical_outputs(name, centroids, tiny_batch, tmp_path):
    torch.manual_seed(0)
    up = _hubert(centroids) if name == "hubert" else build_upstream(name, **DATA2VEC)
    x, n = tiny_batch["audio"][:2], tiny_batch["lengths"][:2]
    up.train().pretrain_loss(x, n)["loss"].backward()
    up.after_step(1)
    save_weights(tmp_path / "w.safetensors", up)
    torch.manual_seed(1)
    again = build_upstream(name, **(HUBERT if name == "hubert" else DATA2VEC))
    load_weights(tmp_path / "w.safetensors", again)
    with torch.no_grad():
        a, b = up.eval()(x, n), again.eval()(x, n)
    assert len(a.hidden_states) == 3 and a.lengths.tolist() == b.lengths.tolist()
    for h, k in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(h, k)
    for k, v in up.state_dict().items():  # the teacher and the centroids too
        assert torch.equal(v, again.state_dict()[k]), k


def test_data2vec_targets_are_normalised_top_layer_means():
    from speechssl.upstream.data2vec import instance_norm, layer_average_targets

    valid = torch.tensor([[True, True, True, False]])
    h = torch.tensor([[[1.0], [2.0], [3.0], [50.0]]])
    normed = instance_norm(h, valid)
    assert normed[0, :3, 0].tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-3)
    assert normed[0, 3, 0].item() == 0.0
    t = layer_average_targets([h * 10, h, -h], valid, top_k=2)
    assert t.abs().max().item() == pytest.approx(0.0, abs=1e-6)  # mean of normed h and -h


@pytest.mark.parametrize("target", ["ffn", "block"])
def test_data2vec_targets_average_what_the_paper_averages(target, tiny_batch):
    """target=ffn (the paper's code): each teacher layer's feed-forward output before its
    residual sum; block: the layer outputs. Both instance-normalised, top K averaged."""
    from speechssl.nn.masking import valid_mask
    from speechssl.upstream.data2vec import instance_norm

    torch.manual_seed(0)
    up = build_upstream("data2vec", **DATA2VEC, target=target).eval()
    x, n = tiny_batch["audio"][:2], torch.tensor([16000, 11000])
    seen = []
    hooks = [layer.ff.register_forward_hook(lambda m, i, o: seen.append(o))
             for layer in up.teacher.transformer.layers]
    with torch.no_grad():
        _, _, feats, frames = up.backbone.encode(x, n)
        got = up.targets(feats, frames)
        blocks = up.backbone.contextualize(feats, frames, context=up.teacher)[1:]
    for h in hooks:
        h.remove()
    valid = valid_mask(frames, feats.shape[1])
    chosen = seen[:2] if target == "ffn" else blocks   # the first pass: the targets' own
    want = torch.stack([instance_norm(h, valid) for h in chosen[-2:]]).mean(0)
    assert torch.allclose(got, want, atol=1e-5)
    other = torch.stack([instance_norm(h, valid) for h in (blocks if target == "ffn"
                                                          else seen[:2])[-2:]]).mean(0)
    assert not torch.allclose(got, other, atol=1e-2)
    with pytest.raises(ConfigError, match="upstream.target='mean'"):
        build_upstream("data2vec", **DATA2VEC, target="mean")


def test_data2vec_loss_falls_and_teacher_follows_ema(tiny_batch):
    torch.manual_seed(0)
    up = build_upstream("data2vec", **DATA2VEC).train()
    assert up.teacher.training is False
    assert not any(p.requires_grad for p in up.teacher.parameters())
    t0 = [p.detach().clone() for p in up.teacher.parameters()]
    before = _fixed(up, tiny_batch)
    _train(up, tiny_batch, 1, 3e-3)
    s1 = [p.detach().clone() for p in up.backbone.context.parameters()]
    tau = up.current_decay()
    assert tau == pytest.approx(0.9)
    up.after_step(1)
    for t, s, new in zip(t0, s1, up.teacher.parameters(), strict=True):
        assert torch.allclose(new, tau * t + (1 - tau) * s, atol=1e-7)
    assert up.current_decay() == pytest.approx(0.909)
    _train(up, tiny_batch, 20, 3e-3, hook=True)
    after = _fixed(up, tiny_batch)
    assert after["loss"] < 0.9 * before["loss"], (before, after)


def _small(name: str) -> list[str]:
    opts = HUBERT if name == "hubert" else DATA2VEC
    return [f"upstream={name}", *(f"upstream.{k}={v}" for k, v in opts.items()),
            "upstream.pretrain.batch_seconds=12", "upstream.pretrain.save_every=2",
            "upstream.pretrain.log_every=1"]


@pytest.mark.parametrize("name", ["data2vec", "hubert"])
def test_pretrain_hooks_and_exact_resume(name, make_cfg, tiny_corpus, tmp_path, capsys):
    """pretrain.py calls prepare (HuBERT's k-means, cached in the run) and after_step
    (data2vec's EMA); an interrupted run resumes to the same weights, teacher included."""
    from speechssl.pretrain import pretrain
    from speechssl.upstream.load import pretrain_dir

    full = make_cfg(*_small(name), "upstream.pretrain.steps=3", f"out_dir={tmp_path / 'a'}")
    w_full = load_file(pretrain(full, tiny_corpus, torch.device("cpu")))
    first = make_cfg(*_small(name), "upstream.pretrain.steps=2", f"out_dir={tmp_path / 'b'}")
    pretrain(first, tiny_corpus, torch.device("cpu"))
    second = make_cfg(*_small(name), "upstream.pretrain.steps=3", f"out_dir={tmp_path / 'b'}")
    w_resumed = load_file(pretrain(second, tiny_corpus, torch.device("cpu")))
    assert w_full.keys() == w_resumed.keys()
    for k in w_full:
        assert torch.equal(w_full[k], w_resumed[k]), k
    out = capsys.readouterr().out
    if name == "hubert":
        assert (pretrain_dir(second, tiny_corpus) / "kmeans-iter1.pt").is_file()
        assert "reusing k-means targets" in out and "PNMI" in out
        assert bool(w_full["fitted"])
    else:
        assert int(w_full["ema_steps"]) == 3


def test_data2vec_paper_backbone_ignores_padding_and_pretrains():
    """conv_norm=layer conv_pos_layers=N (the paper's backbone, HF's Data2VecAudioModel): the
    valid frames of a padded batch equal each item run alone, the teacher copies the
    position stack, and a pre-training step with its EMA update runs."""
    torch.manual_seed(0)
    up = build_upstream("data2vec", **DATA2VEC, conv_norm="layer", conv_pos_layers=3).eval()
    assert len(up.teacher.transformer.pos_conv.convs) == 3
    g = torch.Generator().manual_seed(0)
    x, n = torch.randn(2, 9000, generator=g) * 0.1, torch.tensor([9000, 5200])
    with torch.no_grad():
        batch = up(x, n)
        alone = up(x[1:, :5200], n[1:])
    frames = int(alone.lengths[0])
    assert frames == int(batch.lengths[1])
    for a, b in zip(alone.hidden_states, batch.hidden_states, strict=True):
        torch.testing.assert_close(a[0], b[1, :frames], atol=1e-5, rtol=1e-5)
    up.train().pretrain_loss(x, n)["loss"].backward()
    up.after_step(1)
    with pytest.raises(ConfigError, match="upstream.conv_norm='group'; valid: group_first, layer"):
        build_upstream("data2vec", **DATA2VEC, conv_norm="group")
