"""upstream=torchaudio: architectures by name, fairseq checkpoints (a fairseq-format state
dict built here from a random torchaudio model), HuggingFace directories, and the refusal
of pickles that need more than torch.load(weights_only=True)."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
import torchaudio

from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.upstream import build_upstream
from speechssl.upstream.hf import files_hash
from speechssl.upstream.torchaudio_models import parse_conv_layers

CONV = [(32, 10, 5), (32, 3, 4), (32, 3, 4)]
ARCH = dict(extractor_mode="group_norm", extractor_conv_layer_config=CONV,
            extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
            encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=2,
            encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=64,
            encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
            encoder_layer_drop=0.0)

# torchaudio name -> fairseq name (the inverse of torchaudio's import_fairseq._map_key)
TO_FAIRSEQ = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.", "feature_extractor.conv_layers.0.2."),
    (r"encoder\.feature_projection\.projection\.", "post_extract_proj."),
    (r"encoder\.feature_projection\.layer_norm\.", "layer_norm."),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original0",
     "encoder.pos_conv.0.weight_g"),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original1",
     "encoder.pos_conv.0.weight_v"),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.transformer\.layer_norm\.", "encoder.layer_norm."),
    (r"encoder\.transformer\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.transformer\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
]


def fairseq_state(model: torch.nn.Module) -> dict:
    out = {}
    for k, v in model.state_dict().items():
        for pat, rep in TO_FAIRSEQ:
            k2 = re.sub(f"^{pat}", rep, k)
            if k2 != k:
                out[k2] = v.clone()
                break
        else:
            raise AssertionError(f"no fairseq name for {k}")
    return out


def fairseq_cfg(name="wav2vec2") -> dict:
    return {"model": {"_name": name, "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 4)] * 2",
                      "encoder_attention_heads": 2, "dropout": 0.0, "attention_dropout": 0.0,
                      "activation_dropout": 0.0, "layer_norm_first": False},
            "task": {"_name": "audio_pretraining", "normalize": False}}


def reference_model():
    torch.manual_seed(3)
    return torchaudio.models.wav2vec2_model(**ARCH, aux_num_out=None).eval()


def test_arch_hidden_states_and_seeded_init():
    up = build_upstream("torchaudio", arch="wav2vec2_model", arch_options=ARCH).eval()
    assert up.downsample_rate == 80 and up.weights_hash() is None
    wavs, lengths = torch.randn(2, 4000) * 0.1, torch.tensor([4000, 2000])
    with torch.no_grad():
        out = up(wavs, lengths)
        ref, ref_len = up.model.extract_features(wavs[1:, :2000])
    assert len(out.hidden_states) == 3 and out.lengths.tolist() == [50, 25]
    for ours, theirs in zip(out.hidden_states[1:], ref, strict=True):
        torch.testing.assert_close(ours[1, :25], theirs[0], atol=1e-5, rtol=1e-5)
    again = build_upstream("torchaudio", arch="wav2vec2_model", arch_options=ARCH)
    other = build_upstream("torchaudio", arch="wav2vec2_model", arch_options=ARCH, init_seed=1)
    p = "model.encoder.feature_projection.projection.weight"
    assert torch.equal(up.state_dict()[p], again.state_dict()[p])
    assert not torch.equal(up.state_dict()[p], other.state_dict()[p])


@pytest.mark.parametrize("layout", ["wav2vec2", "hubert", "finetuned", "flat-args"])
def test_fairseq_checkpoint_imports_exactly(tmp_path, layout):
    ref = reference_model()
    state = fairseq_state(ref)
    state["mask_emb"] = torch.zeros(32)  # pre-training only: dropped on import
    ckpt = {"cfg": fairseq_cfg(layout), "model": state}
    if layout == "finetuned":  # a wav2vec_ctc checkpoint: encoder under w2v_encoder., a head
        ckpt["model"] = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()}
        ckpt["model"]["w2v_encoder.proj.weight"] = torch.zeros(5, 32)
        ckpt["cfg"] = {"model": {"_name": "wav2vec_ctc", "w2v_args": fairseq_cfg()}}
    if layout == "flat-args":  # pre-hydra fairseq: vars(args), one flat dict
        flat = fairseq_cfg()
        ckpt = {"args": {**flat["model"], **flat["task"], "arch": "wav2vec2"}, "model": state}
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt, path)
    up = build_upstream("torchaudio", fairseq=str(path)).eval()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(up.model.state_dict()[k], v, atol=0, rtol=0)
    wavs = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        ours = up(wavs, torch.tensor([4000])).hidden_states
        theirs, _ = ref.extract_features(wavs)
    torch.testing.assert_close(ours[-1], theirs[-1], atol=1e-5, rtol=1e-5)
    assert up.weights_hash() == files_hash(path)


def test_fairseq_normalize_follows_the_task(tmp_path):
    cfg = fairseq_cfg()
    cfg["task"]["normalize"] = True
    path = tmp_path / "norm.pt"
    torch.save({"cfg": cfg, "model": fairseq_state(reference_model())}, path)
    assert build_upstream("torchaudio", fairseq=str(path)).normalize is True
    assert build_upstream("torchaudio", fairseq=str(path), normalize=False).normalize is False


class Payload:
    """Stands for any non-tensor object a pickle may carry."""


@pytest.mark.parametrize("obj,cls", [(argparse.Namespace(encoder_layers=2), "argparse.Namespace"),
                                     (Payload(), "Payload")])
def test_pickles_with_objects_are_refused_by_name(tmp_path, obj, cls):
    path = tmp_path / "unsafe.pt"
    torch.save({"args": obj, "model": {}}, path)
    expected = f"{re.escape(str(path))}: refused: the pickle holds an object of class .*{cls}"
    with pytest.raises(SpeechSSLError, match=expected + ".*weights_only=True"):
        build_upstream("torchaudio", fairseq=str(path))


def test_bad_fairseq_files(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        build_upstream("torchaudio", fairseq=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpeechSSLError, match="junk.pt: not a readable torch checkpoint"):
        build_upstream("torchaudio", fairseq=str(tmp_path / "junk.pt"))
    torch.save({"cfg": fairseq_cfg(), "model": {"encoder.layers.0.fc1.weight": torch.zeros(2)}},
               tmp_path / "partial.pt")
    with pytest.raises(SpeechSSLError, match="partial.pt: missing"):
        build_upstream("torchaudio", fairseq=str(tmp_path / "partial.pt"))


def test_huggingface_directory_through_torchaudio(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    model = transformers.Wav2Vec2Model(config).eval()
    model.save_pretrained(tmp_path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path)
    up = build_upstream("torchaudio", hf=str(tmp_path)).eval()
    assert up.normalize is False and up.weights_hash() == files_hash(tmp_path)
    wavs = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        ours = up(wavs, torch.tensor([4000])).hidden_states
        theirs = model(wavs, output_hidden_states=True).hidden_states
    for a, b in zip(ours, theirs, strict=True):  # post-LN: the same layers as transformers'
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_option_errors():
    with pytest.raises(ConfigError, match="exactly one of upstream.arch"):
        build_upstream("torchaudio")
    with pytest.raises(ConfigError, match="got arch, fairseq"):
        build_upstream("torchaudio", arch="wav2vec2_base", fairseq="x.pt")
    with pytest.raises(ConfigError, match="upstream.arch='nope'; valid: wav2vec2_base"):
        build_upstream("torchaudio", arch="nope")
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [
        (512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(ConfigError, match="conv_feature_layers"):
        parse_conv_layers("__import__('os').system('true')")


def test_recipe_composes_and_checks(tmp_path):
    from speechssl.config import check_overrides

    path = tmp_path / "checkpoint.pt"
    torch.save({"cfg": fairseq_cfg(), "model": fairseq_state(reference_model())}, path)
    check_overrides(["upstream=torchaudio", f"upstream.fairseq={path}", "device=cpu"])
    with pytest.raises(ConfigError, match="exactly one of"):
        check_overrides(["upstream=torchaudio", "device=cpu"])
