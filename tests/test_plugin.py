"""Upstreams from outside the package: ``module:Class`` names, the ``speechssl.upstreams``
entry-point group (a temporary dist-info on sys.path, nothing installed), the run.py
command-line rewrite, and a leaderboard row from the example plug-in on the tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechssl import store
from speechssl.config import RECIPES
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.upstream import build_upstream, registered_upstreams, upstream_class
from speechssl.upstream.load import build_from_config
from speechssl.upstream.plugin import rewrite_overrides

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "my_upstream"
EXAMPLE = "my_upstream.model:TinyConv"


@pytest.fixture
def example(monkeypatch):
    """The example package importable (as if pip-installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    return EXAMPLE


def fake_install(root: Path, monkeypatch, entry_points: str) -> None:
    """A dist-info with ``entry_points`` on sys.path: what pip install leaves behind."""
    info = root / "my_upstream-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-upstream\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[speechssl.upstreams]\n{entry_points}\n")
    monkeypatch.syspath_prepend(str(root))


def test_module_class_name(example):
    cls = upstream_class(example)
    assert cls.__name__ == "TinyConv"
    up = build_upstream(example, hidden_size=16)
    assert up.proj.out_features == 16
    with pytest.raises(ConfigError, match="has no option.*valid options: hidden_size"):
        build_upstream(example, hiden_size=16)


@pytest.mark.parametrize("spec,message", [
    ("no_such_pkg_xyz.model:Net", "no module named 'no_such_pkg_xyz.model' on the Python path"),
    ("speechssl.upstream.apc:Nope", "has no 'Nope'; upstream classes defined there: APC"),
    ("speechssl.upstream.apc:apc_l1_loss", "is a function, not a subclass of speechssl"),
    ("torch.nn:Linear", "class torch.nn.modules.linear.Linear, not a subclass"),
    ("speechssl.upstream.base:Upstream", "does not implement forward"),
    ("speechssl.upstream.apc:", "expected module.path:ClassName"),
    ("nothing_here", "unknown upstream 'nothing_here'; registered upstreams: .*module.path:ClassName"),
])
def test_bad_names_are_explained(spec, message):
    with pytest.raises(ConfigError, match=message):
        upstream_class(spec)


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_upstream_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpeechSSLError, match="importing 'broken_upstream_mod' failed: RuntimeError: boom"):
        upstream_class("broken_upstream_mod:Net")


def test_entry_point_group(tmp_path, monkeypatch, example):
    fake_install(tmp_path, monkeypatch, f"tiny_conv = {example}\nbroken_up = no_such_pkg_xyz:Net")
    assert {"tiny_conv", "broken_up", "apc", "fbank"} <= set(registered_upstreams())
    assert upstream_class("tiny_conv") is upstream_class(example)
    assert build_upstream("tiny_conv", hidden_size=8).proj.out_features == 8
    with pytest.raises(SpeechSSLError, match="'broken_up': loading entry point 'no_such_pkg_xyz:Net'"):
        upstream_class("broken_up")


def test_command_line_rewrite(tmp_path, monkeypatch, example):
    args = [f"upstream={example}", "upstream.hidden_size=32", "upstream.pretrain.steps=5",
            "upstream.ckpt=w.safetensors", "++upstream.kernel_size=3", "downstream=ks", "-m"]
    assert rewrite_overrides(args, RECIPES) == [
        "upstream=plugin", f"upstream.name={example}", "+upstream.hidden_size=32",
        "upstream.pretrain.steps=5", "upstream.ckpt=w.safetensors", "++upstream.kernel_size=3",
        "downstream=ks", "-m"]
    builtin = ["upstream=apc", "upstream.hidden_size=32", "--cfg", "job"]
    assert rewrite_overrides(builtin, RECIPES) == builtin
    assert rewrite_overrides(["upstream=a.b:C,d.e:F"], RECIPES) == [
        "upstream=plugin", "upstream.name=a.b:C,d.e:F"]
    fake_install(tmp_path, monkeypatch, f"tiny_conv = {example}")
    assert rewrite_overrides(["upstream=tiny_conv", "upstream.hidden_size=8"], RECIPES) == [
        "upstream=plugin", "upstream.name=tiny_conv", "+upstream.hidden_size=8"]
    with pytest.raises(ConfigError, match="cannot mix built-in upstreams and plugged"):
        rewrite_overrides(["upstream=apc,a.b:C"], RECIPES)
    with pytest.raises(ConfigError, match="upstream=nope: no such upstream; recipes: apc, .*fbank"):
        rewrite_overrides(["upstream=nope"], RECIPES)
    with pytest.raises(ConfigError, match="upstream=plugin needs upstream.name"):
        rewrite_overrides(["upstream=plugin"], RECIPES)


def test_rewritten_overrides_compose(make_cfg, example):
    from speechssl.config import check_overrides

    args = rewrite_overrides([f"upstream={example}", "upstream.hidden_size=24"], RECIPES)
    check_overrides(args)
    cfg = make_cfg(*args)
    assert cfg.upstream.name == example and cfg.upstream.pretrain.steps > 0
    assert build_from_config(cfg.upstream).proj.out_features == 24


def test_example_plugin_gets_a_leaderboard_row(make_cfg, example, capsys):
    from speechssl.train import train_cell

    args = rewrite_overrides([f"upstream={example}", "upstream.hidden_size=32"], RECIPES)
    cfg = make_cfg(*args, "downstream=ks", "upstream.pretrain.steps=2",
                   "upstream.pretrain.batch_seconds=10", "downstream.optim.max_steps=20",
                   "downstream.optim.eval_every=10")
    row = train_cell(cfg)
    assert "pre-training it now" in capsys.readouterr().out
    assert row["upstream"] == example and 0.0 <= row["test_value"] <= 100.0
    assert len(json.loads(row["layer_weights"])) == 3  # projection + 2 convolutions
    stored = store.rows(cfg.leaderboard)
    assert [(r["upstream"], r["task"]) for r in stored] == [(example, "ks")]
