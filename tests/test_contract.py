"""The upstream contract (docs/plug-in.md) that every upstream must pass: each registered one
(built-ins and installed plug-ins), the example plug-in, and any ``module:Class`` named
in the SPEECHSSL_UPSTREAMS environment variable (comma separated):

    SPEECHSSL_UPSTREAMS=my_pkg.model:MyModel python -m pytest tests/test_contract.py

Upstreams are built with small options: CONTRACT_OPTIONS below for built-ins, else the
class's own ``contract_options`` dict (if any), else its defaults.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from speechssl.upstream import Upstream, UpstreamOutput, build_upstream, registered_upstreams
from speechssl.upstream.base import upstream_class

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "examples" / "my_upstream"
EXAMPLE = "my_upstream.model:TinyConv"
TINY_W2V = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(32, 10, 5), (32, 3, 4)],
                extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
                encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4, encoder_num_layers=2,
                encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=64,
                encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
                encoder_layer_drop=0.0)
CONTRACT_OPTIONS = {
    "apc": {"hidden_size": 32, "num_layers": 2},
    "mockingjay": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
                   "downsample": 3},
    "tera": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64},
    "npc": {"hidden_size": 32, "num_layers": 2, "kernel_size": 9, "mask_size": 3},
    "vq_apc": {"hidden_size": 32, "num_layers": 2, "codebook_size": 16, "vq_layer": 0},
    "vqvae": {"hidden_size": 32, "strides": [2, 1], "codebook_size": 16},
    "torchaudio": {"arch": "wav2vec2_model", "arch_options": TINY_W2V},
}
FRAME_SLACK = 3  # frames; or 2% of the expected count, whichever is larger


def _hf_dir(root: Path, kind: str) -> dict:
    """A tiny random transformers model saved to ``root``: the options for upstream=hf."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if kind == "audio":
        config = transformers.Wav2Vec2Config(
            conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 4), num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4, **tiny)
        transformers.Wav2Vec2Model(config).save_pretrained(root)
        transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(root)
    else:
        config = transformers.BertConfig(vocab_size=64, max_position_embeddings=32, **tiny)
        transformers.BertModel(config).save_pretrained(root)
    return {"path": str(root)}


def _cases() -> list:
    names = registered_upstreams() + [EXAMPLE]
    names += [n.strip() for n in os.environ.get("SPEECHSSL_UPSTREAMS", "").split(",") if n.strip()]
    cases = []
    for name in dict.fromkeys(names):
        if name == "hf":
            cases += [pytest.param(("hf", "audio"), id="hf-audio"),
                      pytest.param(("hf", "text"), id="hf-text")]
        else:
            cases.append(pytest.param((name, None), id=name))
    return cases


def tiny_checkpoint(name: str, folder) -> str:
    """A small random upstream (its contract options) saved as a pre-training checkpoint: the
    teacher or unit model another upstream's contract run loads."""
    from speechssl.checkpoint import save_weights

    options = {**upstream_class(name).contract_options}
    torch.manual_seed(0)
    path = folder / f"{name}.safetensors"
    save_weights(path, build_upstream(name, **options),
                 {"upstream": name, "options": json.dumps(options)})
    return str(path)


@pytest.fixture(scope="module", params=_cases())
def upstream(request, tmp_path_factory) -> Upstream:
    name, variant = request.param
    with pytest.MonkeyPatch.context() as mp:
        if name == EXAMPLE and importlib.util.find_spec("my_upstream") is None:
            mp.syspath_prepend(str(EXAMPLE_DIR))
        if name == "hf":
            options = _hf_dir(tmp_path_factory.mktemp(f"hf-{variant}"), variant)
        else:
            cls = upstream_class(name)
            options = CONTRACT_OPTIONS.get(name, getattr(cls, "contract_options", {}))
            if name == "distilhubert":  # a student needs its teacher's checkpoint
                options = {**options, "teacher": tiny_checkpoint(
                    "hubert", tmp_path_factory.mktemp("teacher"))}
            if name == "discrete_bert":  # and a discrete BERT its unit model's
                options = {**options, "units": tiny_checkpoint(
                    "vq_wav2vec", tmp_path_factory.mktemp("units"))}
        torch.manual_seed(0)
        up = build_upstream(name, **options).eval()
        up.contract_build = (name, options)  # for the checkpoint round trip
        return up


def _inputs(up: Upstream) -> tuple[torch.Tensor, torch.Tensor]:
    """Three short sequences of different lengths, padded: (B, T) and (B,)."""
    g = torch.Generator().manual_seed(0)
    if up.modality == "text":
        vocab = min(int(getattr(up, "vocab_size", 100)), 100)
        lengths = torch.tensor([12, 9, 5])
        return torch.randint(0, vocab, (3, 12), generator=g), lengths
    sr = int(up.sample_rate)
    lengths = torch.tensor([sr // 2, sr * 7 // 20, sr // 4])  # 0.5 s, 0.35 s, 0.25 s
    wavs = torch.randn(3, int(lengths[0]), generator=g) * 0.1
    wavs[1, int(lengths[1]):] = 0.0
    wavs[2, int(lengths[2]):] = 0.0
    return wavs, lengths


@pytest.fixture(scope="module")
def batch(upstream):
    x, lengths = _inputs(upstream)
    with torch.no_grad():
        return x, lengths, upstream.eval()(x, lengths)


def test_declares_modality_and_rates(upstream):
    assert upstream.modality in ("audio", "text")
    assert isinstance(upstream.downsample_rate, int) and upstream.downsample_rate > 0
    if upstream.modality == "audio":
        assert isinstance(upstream.sample_rate, int) and upstream.sample_rate > 0


def test_output_shapes_and_lengths(batch):
    x, lengths, out = batch
    assert isinstance(out, UpstreamOutput)
    assert isinstance(out.hidden_states, list) and len(out.hidden_states) > 0
    B, T, D = out.hidden_states[0].shape
    assert B == x.shape[0] and T > 0 and D > 0
    for h in out.hidden_states:
        assert h.shape == (B, T, D), "every layer must be (B, T', D) with one T' and one D"
        assert h.is_floating_point() and torch.isfinite(h).all()
    assert out.lengths.shape == (B,) and not out.lengths.is_floating_point()
    assert int(out.lengths.max()) == T, "lengths.max() must equal the padded frame count T'"


def test_frames_follow_the_downsample_rate(upstream, batch):
    _, lengths, out = batch
    expected = lengths.double() / upstream.downsample_rate
    slack = torch.clamp(0.02 * expected, min=FRAME_SLACK)
    assert ((out.lengths.double() - expected).abs() <= slack).all(), (
        f"frames {out.lengths.tolist()} for {lengths.tolist()} inputs at "
        f"downsample_rate {upstream.downsample_rate}")


def test_padding_does_not_change_valid_frames(upstream, batch):
    x, lengths, out = batch
    with torch.no_grad():
        for i, n in enumerate(lengths.tolist()):
            alone = upstream(x[i: i + 1, :n], lengths[i: i + 1])
            frames = int(alone.lengths[0])
            assert frames == int(out.lengths[i])
            for a, b in zip(alone.hidden_states, out.hidden_states, strict=True):
                torch.testing.assert_close(a[0, :frames], b[i, :frames], atol=1e-4, rtol=1e-5)


def test_deterministic_in_eval_mode(upstream, batch):
    x, lengths, out = batch
    with torch.no_grad():
        again = upstream.eval()(x, lengths)
    assert torch.equal(again.lengths, out.lengths)
    for a, b in zip(again.hidden_states, out.hidden_states, strict=True):
        assert torch.equal(a, b)


def test_describe(upstream, batch):
    info = upstream.describe()
    assert info["num_layers"] == len(batch[2].hidden_states)
    assert info["hidden_size"] == batch[2].hidden_states[0].shape[-1]


def test_pretrain_loss_if_any(upstream, batch, tiny_corpus, tmp_path):
    if not upstream.can_pretrain:
        pytest.skip(f"{type(upstream).__name__} has no pre-training loss")
    x, lengths, _ = batch
    upstream.prepare(tiny_corpus, tmp_path, torch.device("cpu"))  # e.g. HuBERT's k-means targets
    torch.manual_seed(0)
    upstream.train()
    try:
        out = upstream.pretrain_loss(x, lengths)
    finally:
        upstream.eval()
    assert isinstance(out, dict) and "loss" in out
    loss = out["loss"]
    assert loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in upstream.parameters())
    upstream.zero_grad(set_to_none=True)


def test_checkpoint_round_trip(upstream, batch, tmp_path):
    """Saved as safetensors and loaded into a model built with another seed, the upstream
    gives the same hidden states (buffers included: statistics, codebooks, teachers)."""
    from speechssl.checkpoint import load_weights, save_weights

    if not any(True for _ in upstream.parameters()):
        pytest.skip(f"{type(upstream).__name__} has no parameters")
    x, lengths, _ = batch
    with torch.no_grad():  # now: the pre-training test may have moved statistics since
        out = upstream.eval()(x, lengths)
    save_weights(tmp_path / "w.safetensors", upstream)
    name, options = upstream.contract_build
    torch.manual_seed(1)
    again = build_upstream(name, **options)
    load_weights(tmp_path / "w.safetensors", again)
    with torch.no_grad():
        out2 = again.eval()(x, lengths)
    for h, k in zip(out.hidden_states, out2.hidden_states, strict=True):
        assert torch.equal(h, k)
