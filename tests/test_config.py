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


@pytest.mark.parametrize("source,expected", [
    ("['upstream=hubert','upstream.num_clusterz=8']",
     r"upstream.pretrain.teacher_from=\['upstream=hubert', 'upstream.num_clusterz=8'\]: "
     r"unknown config key 'upstream.num_clusterz'; valid keys under 'upstream': .*num_clusters"),
    ("['upstream=hubert','upstream.pretrain.lr=-1']",
     r"upstream.pretrain.teacher_from=.*upstream.pretrain.lr"),
    ("['upstream=hubret']", r"upstream=hubret: no such upstream"),
    ("hubert", r"a list of overrides"),
    ("[7]", r"a list of overrides"),
])
def test_a_checkpoint_source_is_checked_before_any_work(source, expected):
    """upstream.pretrain.teacher_from composes into a config of its own, checked with the
    rest of the command line, not after the source run has been pre-trained."""
    with pytest.raises(ConfigError, match=expected):
        check_overrides(["upstream=distilhubert", f"upstream.pretrain.teacher_from={source}"])


def test_a_source_for_an_option_the_upstream_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"upstream.pretrain.units_from: upstream=distilhubert "
                                          r"reads no checkpoint option 'units'; its options: teacher"):
        check_overrides(["upstream=distilhubert", "+upstream.pretrain.units_from=['upstream=hubert']"])
    check_overrides(["upstream=distilhubert"])      # the recipe's own source is valid
    check_overrides(["upstream=discrete_bert"])
