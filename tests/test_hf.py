"""upstream=hf: randomly initialized transformers models saved to a temporary directory give
the same hidden states through our upstream as through transformers itself (1e-5)."""

from __future__ import annotations

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONV = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

# (config class, model class, config kwargs, feature extractor kwargs)
AUDIO = {
    "wav2vec2-group": ("Wav2Vec2Config", "Wav2Vec2Model", dict(feat_extract_norm="group"),
                       dict(do_normalize=False, return_attention_mask=False)),
    "wav2vec2-stable": ("Wav2Vec2Config", "Wav2Vec2Model",
                        dict(feat_extract_norm="layer", do_stable_layer_norm=True),
                        dict(do_normalize=True, return_attention_mask=True)),
    "hubert": ("HubertConfig", "HubertModel", dict(feat_extract_norm="layer"),
               dict(do_normalize=True, return_attention_mask=True)),
    "wavlm": ("WavLMConfig", "WavLMModel", dict(feat_extract_norm="layer", num_buckets=32,
                                                  max_bucket_distance=64),
              dict(do_normalize=True, return_attention_mask=True)),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel",
                       dict(num_conv_pos_embeddings=2, conv_pos_kernel_size=5),
                       dict(do_normalize=True, return_attention_mask=True)),
}


def save_audio_model(root, kind: str, sampling_rate: int = 16000):
    cfg_cls, model_cls, extra, fe_kwargs = AUDIO[kind]
    torch.manual_seed(0)
    config = getattr(transformers, cfg_cls)(**{**TINY, **CONV, **extra})
    model = getattr(transformers, model_cls)(config).eval()
    model.save_pretrained(root)
    fe = transformers.Wav2Vec2FeatureExtractor(sampling_rate=sampling_rate, **fe_kwargs)
    fe.save_pretrained(root)
    return model, fe


def save_text_model(root, kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(vocab_size=100, max_position_embeddings=64, **TINY)
        model = transformers.BertModel(config)
    else:
        config = transformers.RobertaConfig(vocab_size=100, max_position_embeddings=70,
                                            pad_token_id=1, **TINY)
        model = transformers.RobertaModel(config)
    model.eval().save_pretrained(root)
    return model


@pytest.mark.parametrize("kind", list(AUDIO))
def test_audio_hidden_states_equal_transformers(tmp_path, kind):
    model, fe = save_audio_model(tmp_path, kind)
    up = build_upstream("hf", path=str(tmp_path)).eval()
    assert up.modality == "audio" and up.downsample_rate == 80 and up.sample_rate == 16000
    assert up.normalize == fe.do_normalize
    torch.manual_seed(1)
    wavs = torch.randn(2, 4000) * 0.3 + 0.05
    lengths = torch.tensor([4000, 2500])
    with torch.no_grad():
        out = up(wavs, lengths)
        assert len(out.hidden_states) == 3  # transformer input + 2 layers
        for i, n in enumerate(lengths.tolist()):
            inputs = fe(wavs[i, :n].numpy(), sampling_rate=16000, return_tensors="pt")
            ref = model(inputs["input_values"], output_hidden_states=True).hidden_states
            assert int(out.lengths[i]) == ref[0].shape[1]
            for ours, theirs in zip(out.hidden_states, ref, strict=True):
                torch.testing.assert_close(ours[i, : int(out.lengths[i])], theirs[0],
                                           atol=1e-5, rtol=1e-5)


def test_batched_with_attention_mask_matches_one_by_one(tmp_path):
    save_audio_model(tmp_path, "hubert")
    alone = build_upstream("hf", path=str(tmp_path)).eval()
    batched = build_upstream("hf", path=str(tmp_path), batched=True).eval()
    assert batched.use_mask
    wavs, lengths = torch.randn(2, 4000) * 0.3, torch.tensor([4000, 2500])
    with torch.no_grad():
        a, b = alone(wavs, lengths), batched(wavs, lengths)
    assert a.lengths.tolist() == b.lengths.tolist()
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        n = int(a.lengths[1])
        torch.testing.assert_close(x[1, :n], y[1, :n], atol=1e-4, rtol=1e-4)


def test_train_mode_keeps_every_layer_and_frame(tmp_path):
    """Tuned, the upstream runs in train mode: transformers' layerdrop and SpecAugment are
    off, so with no dropout the layers are the eval ones (and as many)."""
    torch.manual_seed(0)
    zero = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                feat_proj_dropout=0.0, layerdrop=0.9, mask_time_prob=0.5, mask_time_length=2)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY, **CONV, **zero)).save_pretrained(
        tmp_path)
    up = build_upstream("hf", path=str(tmp_path))
    wavs, lengths = torch.randn(2, 4000) * 0.3, torch.tensor([4000, 2500])
    with torch.no_grad():
        ref = up.eval()(wavs, lengths).hidden_states
        for _ in range(3):
            out = up.train()(wavs, lengths).hidden_states
            assert len(out) == len(ref) == 3
            assert all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))


def test_sample_rate_and_normalize_come_from_the_feature_extractor(tmp_path):
    save_audio_model(tmp_path, "wav2vec2-group", sampling_rate=8000)
    up = build_upstream("hf", path=str(tmp_path))
    assert up.sample_rate == 8000 and up.normalize is False
    assert build_upstream("hf", path=str(tmp_path), normalize=True).normalize is True


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_text_hidden_states_equal_transformers(tmp_path, kind):
    model = save_text_model(tmp_path, kind)
    up = build_upstream("hf", path=str(tmp_path)).eval()
    assert up.modality == "text" and up.downsample_rate == 1 and up.vocab_size == 100
    ids = torch.randint(5, 100, (2, 12))
    lengths = torch.tensor([12, 7])
    with torch.no_grad():
        out = up(ids, lengths)
        assert out.lengths.tolist() == [12, 7] and len(out.hidden_states) == 3
        for i, n in enumerate(lengths.tolist()):
            ref = model(ids[i: i + 1, :n], output_hidden_states=True).hidden_states
            for ours, theirs in zip(out.hidden_states, ref, strict=True):
                torch.testing.assert_close(ours[i, :n], theirs[0], atol=1e-5, rtol=1e-5)


def test_tokenize_uses_the_directory_tokenizer(tmp_path):
    save_text_model(tmp_path, "bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    up = build_upstream("hf", path=str(tmp_path))
    ids, lengths = up.tokenize(["hello world", "hello"])
    assert ids[0].tolist() == [2, 5, 6, 3] and lengths.tolist() == [4, 3]


def test_weights_hash_follows_the_files(tmp_path):
    save_audio_model(tmp_path, "hubert")
    h1 = build_upstream("hf", path=str(tmp_path)).weights_hash()
    torch.manual_seed(5)
    config = transformers.HubertConfig(**{**TINY, **CONV, "feat_extract_norm": "layer"})
    transformers.HubertModel(config).save_pretrained(tmp_path)
    h2 = build_upstream("hf", path=str(tmp_path)).weights_hash()
    assert len(h1) == 12 and h1 != h2


def test_errors_name_the_path(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="upstream.path is not set"):
        build_upstream("hf")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope'}: not a local directory"):
        build_upstream("hf", path=str(tmp_path / "nope"))
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        build_upstream("hf", path=str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"pip install -e '.\[hf\]'"):
        build_upstream("hf", path=str(tmp_path))


def test_recipe_composes_and_checks(tmp_path):
    from speechssl.config import check_overrides

    save_audio_model(tmp_path, "wavlm")
    check_overrides(["upstream=hf", f"upstream.path={tmp_path}", "device=cpu"])
    with pytest.raises(ConfigError, match="upstream.path is not set"):
        check_overrides(["upstream=hf", "device=cpu"])
