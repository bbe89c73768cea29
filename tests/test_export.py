"""mode=export: the weights a cell would use, written as safetensors + yaml, reload
bit-identically through ``upstream=NAME upstream.ckpt=<file>``; run.py in-process."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from speechssl.checkpoint import save_weights
from speechssl.errors import SpeechSSLError
from speechssl.export import export_upstream, load_exported
from speechssl.upstream import build_upstream
from speechssl.upstream.load import load_upstream

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "examples" / "my_upstream"
CPU = torch.device("cpu")


def run_cli(monkeypatch, capsys, *args: str) -> str:
    """``python run.py ARGS`` in this process (as __main__, so Hydra finds recipes/)."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / "run.py"), *args])
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    return capsys.readouterr().out


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_run_py_export_reloads_bit_identically(make_cfg, data_dir, tmp_path, tiny_corpus,
                                               monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    name = "my_upstream.model:TinyConv"
    out = run_cli(monkeypatch, capsys, "mode=export", f"upstream={name}",
                  "upstream.hidden_size=16", "upstream.pretrain.steps=3",
                  "upstream.pretrain.batch_seconds=20", "corpus.size=tiny", f"data_dir={data_dir}",
                  f"out_dir={tmp_path / 'outputs'}", "progress=false", "device=cpu")
    path = Path(out.strip().splitlines()[-1])
    assert path.is_file() and path.parent == tmp_path / "outputs" / "export"
    plugged = ["upstream=plugin", f"upstream.name={name}", "+upstream.hidden_size=16",
               "upstream.pretrain.steps=3", "upstream.pretrain.batch_seconds=20"]  # the same run
    used, info = load_upstream(make_cfg(*plugged), tiny_corpus, CPU)  # what a cell would use
    again, info2 = load_upstream(make_cfg(*plugged, f"upstream.ckpt={path}"), tiny_corpus, CPU)
    assert_same_weights(used, again)
    assert info2.source == str(path) and info2.pretrain_corpus == info.pretrain_corpus
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["upstream"] == name and meta["weights_hash"] == info.weights_hash
    assert json.loads(meta["options"]) == {"hidden_size": 16}
    config = yaml.safe_load(path.with_suffix(".yaml").read_text())
    assert config["name"] == name and config["hidden_size"] == 16 and config["ckpt"] == str(path)
    assert_same_weights(load_exported(path), used)


def test_export_a_checkpointed_apc(make_cfg, tiny_corpus, tmp_path, capsys):
    torch.manual_seed(1)
    weights = tmp_path / "apc.safetensors"
    save_weights(weights, build_upstream("apc", hidden_size=32, num_layers=2))
    args = ["upstream=apc", "upstream.hidden_size=32", "upstream.num_layers=2"]
    path = export_upstream(make_cfg(*args, f"upstream.ckpt={weights}"))
    assert "reload: upstream=apc upstream.ckpt=" in capsys.readouterr().out
    used, _ = load_upstream(make_cfg(*args, f"upstream.ckpt={weights}"), tiny_corpus, CPU)
    again, _ = load_upstream(make_cfg(*args, f"upstream.ckpt={path}"), tiny_corpus, CPU)
    assert_same_weights(used, again)
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        a, b = used(x, torch.tensor([8000])), again(x, torch.tensor([8000]))
    assert all(torch.equal(p, q) for p, q in zip(a.hidden_states, b.hidden_states, strict=True))


def test_export_path_option_and_bad_files(make_cfg, tmp_path):
    path = export_upstream(make_cfg("upstream=fbank", f"+export_path={tmp_path / 'fb'}"))
    assert path == tmp_path / "fb.safetensors" and path.with_suffix(".yaml").is_file()
    assert type(load_exported(path)).__name__ == "FBank"
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(SpeechSSLError, match="junk.safetensors: not a readable safetensors"):
        load_exported(tmp_path / "junk.safetensors")
