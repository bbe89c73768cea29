"""DistilHuBERT (speechssl/upstream/distilhubert.py): layer-wise distillation of a HuBERT."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.checkpoint import save_weights
from speechssl.errors import ConfigError
from speechssl.upstream import build_upstream

TEACHER = {"conv_dim": 32, "hidden_size": 32, "num_layers": 3, "num_heads": 2, "ff_size": 64,
           "conv_pos_kernel": 8, "conv_pos_groups": 4, "final_dim": 16, "num_clusters": 8,
           "frontend": "fbank", "dropout": 0.0, "attention_dropout": 0.0, "feature_dropout": 0.0}
STUDENT = {"conv_dim": 32, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "ff_size": 64,
           "conv_pos_kernel": 8, "conv_pos_groups": 4, "target_layers": [1, 3],
           "teacher_hidden": 32, "frontend": "fbank", "dropout": 0.0, "attention_dropout": 0.0,
           "feature_dropout": 0.0}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = build_upstream("hubert", **TEACHER)
    path = tmp_path_factory.mktemp("teacher") / "hubert.safetensors"
    save_weights(path, model, {"upstream": "hubert", "options": json.dumps(TEACHER)})
    return str(path)


def test_student_starts_from_the_teacher_and_learns_its_layers(teacher, clips, tmp_path):
    """Measured: the cosine to the teacher's layers 1 and 3 climbs from about 0.5 to above
    0.9 in 60 updates; the teacher never gets a gradient."""
    torch.manual_seed(0)
    student = build_upstream("distilhubert", teacher=teacher, **STUDENT)
    student.prepare(None, tmp_path, "cpu")
    t = student.teacher()
    assert torch.equal(student.backbone.proj.weight, t.backbone.proj.weight)  # initialised
    assert torch.equal(student.backbone.context.transformer.layers[0].ff[0].weight,
                       t.backbone.context.transformer.layers[0].ff[0].weight)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    logs = []
    for _ in range(60):
        out = student.pretrain_loss(*clips)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        logs.append({k: float(v) for k, v in out.items()})
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"], (logs[0], logs[-1])
    assert logs[-1]["cosine_layer3"] > 0.8 and logs[-1]["cosine_layer1"] > 0.8, logs[-1]
    assert all(p.grad is None for p in t.parameters())
    assert "teacher" not in " ".join(student.state_dict())
    assert len(student.eval()(*clips).hidden_states) == 2  # input + 1 layer: heads dropped


def test_a_student_needs_a_fitting_teacher(teacher, tmp_path):
    with pytest.raises(ConfigError, match="upstream.teacher"):
        build_upstream("distilhubert", **STUDENT).prepare(None, tmp_path, "cpu")
    with pytest.raises(ConfigError, match="layers 1..3"):
        build_upstream("distilhubert", teacher=teacher,
                       **{**STUDENT, "target_layers": [4]}).prepare(None, tmp_path, "cpu")
    with pytest.raises(ConfigError, match="samples per frame"):
        build_upstream("distilhubert", teacher=teacher,
                       **{**STUDENT, "mel_stack": 3}).prepare(None, tmp_path, "cpu")


def test_an_unset_teacher_is_the_teacher_recipes_run(make_cfg, tiny_corpus, tmp_path):
    """upstream.teacher unset: pretrain.teacher_from's run (here a tiny hubert, 2 updates) is
    pre-trained first in the same out_dir, and the student is the run it would be with that
    file named by hand (one command: python run.py upstream=distilhubert downstream=pr)."""
    from speechssl.pretrain import pretrain
    from speechssl.upstream.load import pretrain_dir

    small = ["upstream.pretrain.steps=2", "upstream.pretrain.batch_seconds=20",
             "upstream.pretrain.warmup_steps=0"]
    teacher_from = ["upstream=hubert", *small, "upstream.num_clusters=8",
                    *(f"upstream.{k}={v}" for k, v in TEACHER.items())]
    student = ["upstream=distilhubert", *small, f"out_dir={tmp_path}",
               *(f"upstream.{k}={v}".replace(" ", "") for k, v in STUDENT.items())]
    quoted = ",".join(f"'{o}'" for o in teacher_from)
    cfg = make_cfg(*student, f"upstream.pretrain.teacher_from=[{quoted}]")
    assert cfg.upstream.teacher is None
    final = pretrain(cfg, tiny_corpus, torch.device("cpu"))
    teacher = cfg.upstream.teacher
    assert teacher.startswith(str(tmp_path / "pretrain" / "hubert")) and final.is_file()
    by_hand = make_cfg(*student, f"upstream.teacher={teacher}")
    assert pretrain_dir(by_hand, tiny_corpus) == final.parent
