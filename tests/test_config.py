"""A bad command line fails at once, naming the valid choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speechssl.config import check_overrides
from speechssl.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("overrides,expected", [
    (["upstream=nope"],
     r"^upstream=nope: no such upstream .*; valid choices: apc, bert, .*wav2vec2$"),
    (["downstream=nope"],
     r"^downstream=nope: no such downstream .*; valid choices: asr, asv, .*sst2$"),
    (["upstream=apc", "upstream.hiden_size=3"], "valid keys under 'upstream': .*hidden_size"),
    (["downstream.optim.lrr=1"], "valid keys under 'downstream.optim': lr"),
    (["bogus=1"], "valid keys under '<top level>': .*mode"),
    (["mode=fly"], "valid modes: train, evaluate, pretrain, synth"),
    (["corpus.size=huge"], "valid sizes: .*tiny"),
    (["device=tpu"], "not a device"),
])
def test_bad_overrides_name_the_choices(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        check_overrides(overrides)


def test_good_overrides_and_sweeps_pass():
    check_overrides(["upstream=apc", "downstream=asr", "upstream.hidden_size=64"])
    check_overrides(["upstream=fbank,apc", "downstream=pr,ks"])


def test_cli_exits_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, "run.py", "upstream=apc", "upstream.hiden=2",
                          f"out_dir={tmp_path}", f"data_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "unknown config key 'upstream.hiden'" in out.stderr
    assert "hidden_size" in out.stderr
    assert not any(tmp_path.iterdir()), "work started despite a bad override"
