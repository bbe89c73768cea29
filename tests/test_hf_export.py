"""mode=export format=hf (speechssl/hf_export.py): wav2vec2, hubert and data2vec written as
transformers save_pretrained directories; transformers' model, loaded from the directory,
gives this project's hidden states (every layer and the last) to 1e-5 on the same waveform,
and so do upstream=hf and upstream=torchaudio reading it. What has no transformers form is
an error naming it."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from speechssl.checkpoint import save_weights
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.hf_export import convert, save_hf
from speechssl.upstream import build_upstream

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
# strides 5 x 8 x 8 = 320 (HuBERT's MFCC targets need a multiple of 160)
TINY = {"conv_dim": 32, "conv_kernels": [10, 3, 3], "conv_strides": [5, 8, 8],
        "hidden_size": 32, "num_layers": 2, "num_heads": 2, "ff_size": 64,
        "conv_pos_kernel": 16, "conv_pos_groups": 4}
CASES = {  # name, options, the transformers class it becomes
    "wav2vec2": ("wav2vec2", {"final_dim": 16, "codebook_size": 16}, "Wav2Vec2Model"),
    "hubert": ("hubert", {"final_dim": 16, "num_clusters": 8}, "HubertModel"),
    "data2vec": ("data2vec", {"top_k": 2}, "Wav2Vec2Model"),  # wav2vec 2.0's backbone
    "data2vec-paper": ("data2vec", {"top_k": 2, "conv_norm": "layer", "conv_pos_layers": 3,
                                    "conv_pos_kernel": 5}, "Data2VecAudioModel"),
}


def tiny(case: str):
    """The upstream of ``case`` with every weight moved off its initial value (so that a
    layer norm's ones or a zero bias would show a wrong mapping)."""
    name, opts, _ = CASES[case]
    torch.manual_seed(0)
    up = build_upstream(name, **{**TINY, **opts}).eval()
    with torch.no_grad():
        for p in up.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return up


def hidden_states(up, wav: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return up(wav, torch.tensor([wav.shape[1]])).hidden_states


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_reproduces_every_hidden_state(case, tmp_path):
    up = tiny(case)
    out, conv = save_hf(up, CASES[case][0], tmp_path / "hf", {"source": "test"})
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    model = transformers.AutoModel.from_pretrained(out).eval()
    assert type(model).__name__ == CASES[case][2]
    assert model.config.model_type == conv.model_type
    wav = torch.randn(1, 12345, generator=torch.Generator().manual_seed(3)) * 0.1
    ours = hidden_states(up, wav)
    with torch.no_grad():
        theirs = model(wav, output_hidden_states=True)
    assert len(theirs.hidden_states) == len(ours) == TINY["num_layers"] + 1
    for i, (a, b) in enumerate(zip(ours, theirs.hidden_states, strict=True)):
        assert a.shape == b.shape, i
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=f"hidden state {i}")
    torch.testing.assert_close(theirs.last_hidden_state, ours[-1], atol=1e-5, rtol=0)
    # and through upstream=hf (the feature extractor says: no input normalisation)
    hf = build_upstream("hf", path=str(out))
    assert hf.normalize is False and hf.downsample_rate == up.downsample_rate
    for a, b in zip(ours, hidden_states(hf, wav), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    if conv.model_type != "data2vec-audio":  # torchaudio imports wav2vec2 and hubert
        ta = build_upstream("torchaudio", hf=str(out))
        for a, b in zip(ours, hidden_states(ta.eval(), wav), strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    info = json.loads((out / "speechssl.json").read_text())
    assert info["upstream"] == CASES[case][0] and info["source"] == "test"
    if case == "data2vec":
        assert any("written as a Wav2Vec2Model" in n for n in info["notes"])


def test_pretraining_heads_are_left_out_and_said():
    conv = convert(tiny("wav2vec2"), "wav2vec2")
    assert not any(k.startswith(("quantizer", "project_q", "final_proj")) for k in conv.state)
    assert "quantizer, project_q, final_proj" in conv.notes[-1]
    assert conv.config["feat_extract_norm"] == "group" and conv.config["layerdrop"] == 0.0
    assert "teacher" in convert(tiny("data2vec"), "data2vec").notes[-1]


def test_what_has_no_transformers_form_is_an_error_naming_it():
    from speechssl import tuning
    from speechssl.hf_export import check_same_hidden_states

    with pytest.raises(SpeechSSLError, match=r"format=hf exports wav2vec2, hubert, data2vec"):
        convert(build_upstream("apc", hidden_size=16, num_layers=1), "apc")
    with pytest.raises(SpeechSSLError, match="frontend=fbank .*no transformers equivalent"):
        convert(build_upstream("hubert", **TINY, frontend="fbank"), "hubert")
    stack_only = build_upstream("data2vec", **TINY, top_k=2, conv_pos_layers=2)
    with pytest.raises(SpeechSSLError, match="Data2VecAudioModel.*conv_norm=layer"):
        convert(stack_only, "data2vec")
    up = tiny("hubert")
    lora = OmegaConf.create({"name": "lora", "rank": 2, "alpha": 2, "dropout": 0.0,
                             "upstream_lr": 1e-3})
    tuning.apply_tuning(up, lora, "hubert")
    with pytest.raises(SpeechSSLError, match="tuning layers"):
        convert(up, "hubert")
    # the export's own check: a model that does not reproduce ours is never written
    other = tiny("wav2vec2")
    from speechssl.hf_export import build_hf_model

    wrong = build_hf_model(convert(other, "wav2vec2"))
    with torch.no_grad():
        wrong.encoder.layers[0].attention.q_proj.weight.add_(0.1)
    with pytest.raises(SpeechSSLError, match="differ from ours"):
        check_same_hidden_states(other, wrong)


def test_config_checks_format_and_upstream(make_cfg):
    from speechssl.config import check_values

    with pytest.raises(ConfigError, match=r"format=hf exports upstream=wav2vec2, hubert, "
                                          r"data2vec .* upstream 'apc'"):
        check_values(make_cfg("upstream=apc", "mode=export", "format=hf"))
    with pytest.raises(ConfigError, match=r"format='onnx'.*speechssl, hf"):
        check_values(make_cfg("upstream=wav2vec2", "mode=export", "format=onnx"))
    check_values(make_cfg("upstream=wav2vec2", "mode=export", "format=hf"))


def test_run_py_export_format_hf(tmp_path, make_cfg, monkeypatch, capsys):
    """``python run.py mode=export format=hf upstream=hubert upstream.frontend=conv upstream.ckpt=...``
    (in process)."""
    up = tiny("hubert")
    ckpt = tmp_path / "hubert.safetensors"
    save_weights(ckpt, up)
    opts = [f"upstream.{k}={json.dumps(v).replace(' ', '')}" for k, v in
            {**TINY, **CASES["hubert"][1], "frontend": "conv"}.items()]
    cfg = make_cfg("upstream=hubert", *opts)  # for its data_dir and out_dir
    monkeypatch.setattr(sys, "argv", [str(ROOT / "run.py"), "mode=export", "format=hf",
                                      "upstream=hubert", *opts, f"upstream.ckpt={ckpt}",
                                      f"data_dir={cfg.data_dir}", f"out_dir={cfg.out_dir}",
                                      "corpus.size=tiny", "progress=false", "device=cpu"])
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    out = capsys.readouterr().out
    path = Path(out.strip().splitlines()[-1])
    assert path.parent == Path(cfg.out_dir) / "export" and path.name.endswith("-hf")
    assert "(transformers HubertModel)" in out and "upstream=hf upstream.path=" in out
    model = transformers.HubertModel.from_pretrained(path).eval()
    wav = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        theirs = model(wav, output_hidden_states=True).hidden_states
    for a, b in zip(hidden_states(up, wav), theirs, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert json.loads((path / "speechssl.json").read_text())["source"] == str(ckpt)
