"""tuning=lora on transformers and torchaudio checkpoints through peft
(speechssl/tuning_peft.py): only the LoRA parameters train, the base weights stay
bit-identical, the count is peft's own, the zero-initialised model is the checkpoint, every
model family's targets are its attention projections, and what peft cannot do is a
ConfigError saying why. One hf x ks cell end to end, re-scored by mode=evaluate."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from test_tuning import _frozen_and_trained_check, _snapshot, cells  # noqa: F401 (fixture)

from speechssl import tuning, tuning_peft
from speechssl.errors import ConfigError
from speechssl.train import evaluate_cell, train_cell
from speechssl.upstream import build_upstream

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONV = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
# model_type -> (config class, extra config) of a tiny random model of each family
FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", CONV),
    "hubert": ("HubertConfig", CONV),
    "data2vec-audio": ("Data2VecAudioConfig", {**CONV, "num_conv_pos_embeddings": 2,
                                               "conv_pos_kernel_size": 5}),
    "wavlm": ("WavLMConfig", {**CONV, "num_buckets": 32, "max_bucket_distance": 64}),
    "bert": ("BertConfig", {"vocab_size": 100, "max_position_embeddings": 64}),
    "roberta": ("RobertaConfig", {"vocab_size": 100, "max_position_embeddings": 70,
                                  "pad_token_id": 1}),
    "albert": ("AlbertConfig", {"vocab_size": 100, "embedding_size": 16,
                                "max_position_embeddings": 64}),
    "distilbert": ("DistilBertConfig", {"vocab_size": 100, "max_position_embeddings": 64}),
    "electra": ("ElectraConfig", {"vocab_size": 100, "embedding_size": 16,
                                  "max_position_embeddings": 64}),
    "xlm-roberta": ("XLMRobertaConfig", {"vocab_size": 100, "max_position_embeddings": 70,
                                         "pad_token_id": 1}),
    "camembert": ("CamembertConfig", {"vocab_size": 100, "max_position_embeddings": 70,
                                      "pad_token_id": 1}),
    "deberta": ("DebertaConfig", {"vocab_size": 100, "max_position_embeddings": 64}),
    "deberta-v2": ("DebertaV2Config", {"vocab_size": 100, "max_position_embeddings": 64}),
    "data2vec-text": ("Data2VecTextConfig", {"vocab_size": 100, "max_position_embeddings": 70,
                                             "pad_token_id": 1}),
}
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.1}
TA_ARCH = dict(extractor_mode="group_norm", extractor_conv_layer_config=[[32, 10, 5], [32, 3, 4]],
               extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
               encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=2,
               encoder_num_heads=2, encoder_attention_dropout=0.0,
               encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
               encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0)


def lora_tc(**opts):
    return OmegaConf.create({"name": "lora", **LORA, "upstream_lr": 1e-3, **opts})


def save_family(root, model_type: str):
    """A tiny random transformers model of ``model_type`` saved to ``root``."""
    cfg_cls, extra = FAMILIES[model_type]
    kwargs = dict(TINY)
    if model_type == "distilbert":  # its own names for the sizes
        kwargs = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
    torch.manual_seed(0)
    config = getattr(transformers, cfg_cls)(**kwargs, **extra)
    transformers.AutoModel.from_config(config).save_pretrained(root)
    if model_type in ("wav2vec2", "hubert", "data2vec-audio", "wavlm"):
        transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(root)
    return root


def frozen(up):
    return up.eval().requires_grad_(False)


def run(up):
    """All hidden states of ``up`` on a fixed input of its modality."""
    with torch.no_grad():
        if up.modality == "text":
            x, n = torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(1)), \
                torch.tensor([7, 4])
        else:
            x, n = torch.randn(2, 6000, generator=torch.Generator().manual_seed(1)) * 0.1, \
                torch.tensor([6000, 4000])
        return up(x, n).hidden_states


def peft_count(model, targets) -> int:
    """peft's own count of trainable parameters for the same LoRA on a copy of ``model``."""
    config = peft.LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"],
                             lora_dropout=LORA["dropout"], target_modules=list(targets))
    return peft.get_peft_model(copy.deepcopy(model), config).get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("model_type", [t for t in FAMILIES if t != "wavlm"])
def test_lora_trains_only_its_layers_on_every_family(tmp_path, model_type):
    up = frozen(build_upstream("hf", path=str(save_family(tmp_path, model_type))))
    before = run(up)
    base = _snapshot(up)
    expected = peft_count(up.model, tuning_peft.LORA_TARGETS[model_type])
    trained = tuning.apply_tuning(up, lora_tc(), "hf", seed=3)
    # the q/k/v/output projections of every layer (deberta: fused q/k/v + output; albert
    # shares one layer's weights across its layers)
    per_layer = 2 if model_type == "deberta" else 4
    layers = 1 if model_type == "albert" else 2
    wrapped = {n.rsplit(".lora_", 1)[0] for n in trained}
    assert len(wrapped) == per_layer * layers, sorted(wrapped)
    assert all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert sum(p.numel() for p in trained.values()) == expected
    assert {n for n, p in up.named_parameters() if p.requires_grad} == set(trained)
    # B is zero: the tuned model is the checkpoint, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(run(up), before, strict=True))
    # the base weights are the checkpoint's, under peft's base_layer names
    after = up.state_dict()
    for k, v in base.items():
        parts = k.rsplit(".", 1)
        moved = k if k in after else f"{parts[0]}.base_layer.{parts[1]}"
        assert torch.equal(after[moved], v), k


def test_lora_layers_are_seeded_and_change_the_output(tmp_path):
    root = save_family(tmp_path, "wav2vec2")
    a = frozen(build_upstream("hf", path=str(root)))
    b = frozen(build_upstream("hf", path=str(root)))
    ta, tb = (tuning.apply_tuning(u, lora_tc(), "hf", seed=5) for u in (a, b))
    assert all(torch.equal(ta[n], tb[n]) for n in ta)
    before = run(a)
    with torch.no_grad():
        for n, p in ta.items():
            if ".lora_B." in n:
                p.normal_()
    assert not torch.equal(run(a)[-1], before[-1])


def test_torchaudio_lora_and_wavlm_refusal():
    up = frozen(build_upstream("torchaudio", arch="wav2vec2_model", arch_options=TA_ARCH))
    assert tuning.supported_modes(up) == type(up).tuning_modes  # frozen, full, scratch, lora
    before, expected = run(up), peft_count(up.model, tuning_peft.LORA_TARGETS["torchaudio"])
    trained = tuning.apply_tuning(up, lora_tc(), "torchaudio")
    assert sum(p.numel() for p in trained.values()) == expected == 2 * 4 * (4 * 32 + 32 * 4)
    assert all(torch.equal(a, b) for a, b in zip(run(up), before, strict=True))
    wavlm = build_upstream("torchaudio", arch="wavlm_model", arch_options={
        **TA_ARCH, "encoder_num_buckets": 32, "encoder_max_distance": 64})
    with pytest.raises(ConfigError, match=r"tuning=lora cannot be used with upstream "
                                          r"'torchaudio' \(WavLM's attention reads"):
        tuning.apply_tuning(frozen(wavlm), lora_tc(), "torchaudio")


def test_what_peft_cannot_do_is_a_config_error(tmp_path, make_cfg, monkeypatch):
    from speechssl.config import check_values

    root = save_family(tmp_path / "w2v", "wav2vec2")
    hf = frozen(build_upstream("hf", path=str(root)))
    assert tuning.supported_modes(hf) == ("frozen", "full", "lora")
    for mode, why in (("prompt", "input embeddings"), ("prefix", "past key/values"),
                      ("adapter", "no bottleneck adapters")):
        with pytest.raises(ConfigError, match=rf"tuning={mode} cannot be used with upstream "
                                              rf"'hf' \(.*{why}.*supports tuning=frozen, full, "
                                              rf"lora$"):
            tuning.check_supported(hf, "hf", mode)
        with pytest.raises(ConfigError, match=why):  # config validation, no model built
            check_values(make_cfg("upstream=hf", f"upstream.path={root}", f"tuning={mode}"))
    check_values(make_cfg("upstream=hf", f"upstream.path={root}", "tuning=lora"))
    wavlm = frozen(build_upstream("hf", path=str(save_family(tmp_path / "wavlm", "wavlm"))))
    with pytest.raises(ConfigError, match=r"WavLM's attention reads its q/k/v/output weights "
                                          r"directly"):
        tuning.apply_tuning(wavlm, lora_tc(), "hf")
    # a family whose forward bypassed its LoRA layers would be caught, not trained silently
    monkeypatch.setitem(tuning_peft.LORA_TARGETS, "wavlm", tuning_peft.LORA_TARGETS["hubert"])
    with pytest.raises(ConfigError, match=r"peft's layer .*lora_A.* does not reach the "
                                          r"upstream's features"):
        tuning.apply_tuning(wavlm, lora_tc(), "hf")


def test_hf_lora_cell_end_to_end(make_cfg, cells, tmp_path):  # noqa: F811 (the fixture)
    """upstream=hf x ks with tuning=lora: the row's count is peft's plus featurizer and
    probe, only the LoRA tensors moved, and mode=evaluate rebuilds and re-scores them."""
    import speechssl.train as train_mod

    root = save_family(tmp_path / "hf", "wav2vec2")
    snapshots = []
    real_train_probe = train_mod.train_probe

    def train_probe(cfg, cell, sources):
        snapshots.append(_snapshot(cell.upstream))
        return real_train_probe(cfg, cell, sources)

    cfg = make_cfg("upstream=hf", f"upstream.path={root}", "downstream=ks",
                   "downstream.optim.max_steps=3", "downstream.optim.eval_every=3",
                   "downstream.optim.batch_seconds=8", "tuning=lora", "tuning.rank=4",
                   "tuning.alpha=8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "train_probe", train_probe)
        row = train_cell(cfg)
    cell = cells[-1]
    model = transformers.AutoModel.from_pretrained(root)
    lora = peft_count(model, tuning_peft.LORA_TARGETS["wav2vec2"])
    classes = len(cell.task.classes)
    assert row["tuning"] == "lora" and 0.0 <= row["test_value"] <= 100.0
    assert row["trainable_params"] == lora + 3 + 32 * classes + classes  # + featurizer, head
    assert set(cell.tuned) and all(".lora_" in n for n in cell.tuned)
    _frozen_and_trained_check(cell, snapshots[0], set(cell.tuned))
    assert evaluate_cell(cfg)["accuracy"] == pytest.approx(row["test_value"])
