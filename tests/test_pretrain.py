"""Pre-training: checkpoints are safetensors, and an interrupted run resumes to the
same weights as an uninterrupted one."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from speechssl.data.corpus import Corpus
from speechssl.pretrain import pretrain
from speechssl.upstream.load import pretrain_dir

SMALL = ["upstream=apc", "upstream.hidden_size=32", "upstream.pretrain.batch_seconds=20",
         "upstream.pretrain.save_every=2", "upstream.pretrain.log_every=1"]


def test_resume_matches_uninterrupted_run(make_cfg, tiny_corpus: Corpus, tmp_path):
    full = make_cfg(*SMALL, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'a'}")
    weights_full = load_file(pretrain(full, tiny_corpus, torch.device("cpu")))

    # "interrupted" after 2 steps (its last checkpoint), then run again to 4 steps
    first = make_cfg(*SMALL, "upstream.pretrain.steps=2", f"out_dir={tmp_path / 'b'}")
    pretrain(first, tiny_corpus, torch.device("cpu"))
    state = json.loads((pretrain_dir(first, tiny_corpus) / "last" / "state.json").read_text())
    assert state["step"] == 2
    second = make_cfg(*SMALL, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'b'}")
    assert pretrain_dir(second, tiny_corpus) == pretrain_dir(first, tiny_corpus)
    weights_resumed = load_file(pretrain(second, tiny_corpus, torch.device("cpu")))

    assert weights_full.keys() == weights_resumed.keys()
    for k in weights_full:
        assert torch.equal(weights_full[k], weights_resumed[k]), k
    run = pretrain_dir(second, tiny_corpus)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["dev_loss"] > 0
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard scalars written"


def test_run_directory_is_keyed_by_the_recipe_not_the_budget(make_cfg, tiny_corpus: Corpus, tmp_path):
    base = make_cfg(*SMALL, "upstream.pretrain.steps=2", f"out_dir={tmp_path}")
    longer = make_cfg(*SMALL, "upstream.pretrain.steps=5", "upstream.pretrain.log_every=3",
                      f"out_dir={tmp_path}")
    other_lr = make_cfg(*SMALL, "upstream.pretrain.steps=2", "upstream.pretrain.lr=0.01",
                        f"out_dir={tmp_path}")
    assert pretrain_dir(longer, tiny_corpus) == pretrain_dir(base, tiny_corpus)
    assert pretrain_dir(other_lr, tiny_corpus) != pretrain_dir(base, tiny_corpus)


def test_a_teacher_keys_the_run_by_its_content_not_its_path(make_cfg, tiny_corpus: Corpus,
                                                            tmp_path):
    """distilhubert's teacher (and discrete_bert's units, hubert's iteration-2 teacher): the
    same bytes under another name are the same run; the file trained on in place (a longer
    teacher run writes the same path) is another; a missing file is named."""
    import pytest

    from speechssl.errors import ConfigError

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"teacher weights, version 1")
    b.write_bytes(a.read_bytes())

    def run(teacher):
        return pretrain_dir(make_cfg("upstream=distilhubert", f"upstream.teacher={teacher}",
                                     f"out_dir={tmp_path}"), tiny_corpus)

    first = run(a)
    assert run(b) == first
    a.write_bytes(b"teacher weights, version 2")
    assert run(a) != first and run(b) == first
    with pytest.raises(ConfigError, match=r"upstream\.teacher=.*missing.* not found"):
        run(tmp_path / "missing.safetensors")


def test_a_cell_asking_for_more_steps_pre_trains_on_and_fewer_is_an_error(
        make_cfg, tiny_corpus: Corpus, tmp_path):
    import pytest

    from speechssl.checkpoint import read_metadata
    from speechssl.errors import ConfigError
    from speechssl.upstream.load import load_upstream

    cpu = torch.device("cpu")
    short = make_cfg(*SMALL, "upstream.pretrain.steps=2", f"out_dir={tmp_path}")
    _, info_short = load_upstream(short, tiny_corpus, cpu)  # pre-trains 2 steps
    longer = make_cfg(*SMALL, "upstream.pretrain.steps=3", f"out_dir={tmp_path}")
    _, info_longer = load_upstream(longer, tiny_corpus, cpu)  # continues to 3
    assert info_longer.weights_hash != info_short.weights_hash
    assert read_metadata(info_longer.source)["steps"] == "3"
    with pytest.raises(ConfigError, match="pre-trained for 3 steps, more than"):
        load_upstream(short, tiny_corpus, cpu)
    with pytest.raises(ConfigError, match="pre-trained for 3 steps, more than"):
        pretrain(short, tiny_corpus, cpu)


def test_learning_curve_points_leave_the_weights_unchanged(make_cfg, tiny_corpus: Corpus,
                                                           tmp_path):
    """pretrain.dev_every: a point at step 0 and every dev_every steps (pretext dev metrics
    on curve_items dev utterances, phone PNMI of the best layer's k-means units), kept in
    summary.json and drawn to curve.png; the run's weights equal those of a run without
    (Mockingjay: its dev loss draws random masks, which must not shift the training's)."""
    cpu = torch.device("cpu")
    small = ["upstream=mockingjay", "upstream.hidden_size=32", "upstream.num_heads=2",
             "upstream.ff_size=64", "upstream.num_layers=2", *SMALL[2:]]
    plain = make_cfg(*small, "upstream.pretrain.steps=4", f"out_dir={tmp_path / 'a'}")
    curved = make_cfg(*small, "upstream.pretrain.steps=4", "upstream.pretrain.dev_every=2",
                      "upstream.pretrain.curve_items=6", f"out_dir={tmp_path / 'b'}")
    weights_plain = load_file(pretrain(plain, tiny_corpus, cpu))
    weights_curved = load_file(pretrain(curved, tiny_corpus, cpu))
    for k in weights_plain:
        assert torch.equal(weights_plain[k], weights_curved[k]), k

    run = pretrain_dir(curved, tiny_corpus)
    summary = json.loads((run / "summary.json").read_text())
    assert [p["step"] for p in summary["curve"]] == [0, 2, 4]
    for point in summary["curve"]:
        assert point["dev_loss"] > 0
        assert 0.0 < point["phone_pnmi"] <= 1.0  # the tiny corpus's items are phone-aligned
        assert 0 <= point["phone_pnmi_layer"] <= 2  # the input and 2 layers
    assert summary["curve_s"] > 0
    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curve" in json.loads((pretrain_dir(plain, tiny_corpus) / "summary.json")
                                 .read_text())  # empty: no points asked for
