"""DistilHuBERT: Chang, Yang and Lee, 2022, "DistilHuBERT: Speech Representation Learning by
Layer-wise Distillation of Hidden-Unit BERT".

A small student (the wav2vec 2.0 backbone with 2 transformer layers, no masking) reads the
same input as a frozen, pre-trained HuBERT teacher (``upstream.teacher=<hubert checkpoint>``)
and predicts several of the teacher's hidden states from its last layer, one linear head per
target layer (paper: layers 4, 8 and 12 of HuBERT BASE); the loss of each head is L1 plus
``cos_weight`` (1) times -log sigmoid(cosine similarity), averaged over frames (and
dimensions for L1), summed over heads. The student starts from the teacher's front-end and
first layers (``init_from_teacher``), as in the paper. The heads are dropped from the
features: the hidden states are the student's transformer input and its layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.conv_encoder import WAV2VEC2_KERNELS, WAV2VEC2_STRIDES
from speechssl.nn.masking import valid_mask
from speechssl.nn.wav2vec2_backbone import MaskedBackbone
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream
from speechssl.upstream.hubert import load_hubert


@register_upstream("distilhubert")
class DistilHuBERT(Upstream):
    """Hidden states: the student's transformer input and each of its ``num_layers`` layers,
    ``hidden_size`` wide, at the teacher's frame rate."""

    checkpoint_options = ("teacher",)
    tuning_modes = TRANSFORMER_TUNING

    contract_options = {"conv_dim": 32, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                        "ff_size": 64, "conv_pos_kernel": 8, "conv_pos_groups": 4,
                        "target_layers": [1, 2], "teacher_hidden": 32}  # tests (+ a teacher)

    def __init__(self, teacher: str | None = None, target_layers: list[int] = (4, 8, 12),
                 teacher_hidden: int = 768, conv_dim: int = 512,
                 conv_kernels: list[int] = WAV2VEC2_KERNELS,
                 conv_strides: list[int] = WAV2VEC2_STRIDES, hidden_size: int = 768,
                 num_layers: int = 2, num_heads: int = 12, ff_size: int = 3072,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.1, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, cos_weight: float = 1.0,
                 init_from_teacher: bool = True, frontend: str = "conv", mel_bins: int = 80,
                 mel_stack: int = 2):
        super().__init__()
        if not target_layers or min(target_layers) < 1:
            raise ConfigError(f"upstream.target_layers={list(target_layers)}: teacher layers "
                              f">= 1")
        self.backbone = MaskedBackbone(conv_dim, conv_kernels, conv_strides, "group_first",
                                       hidden_size, num_layers, num_heads, ff_size, dropout,
                                       attention_dropout, feature_dropout, conv_pos_kernel,
                                       conv_pos_groups, mask_prob=0.0, frontend=frontend,
                                       mel_bins=mel_bins, mel_stack=mel_stack)
        self.downsample_rate = self.backbone.features.stride
        self.heads = nn.ModuleList(nn.Linear(hidden_size, teacher_hidden) for _ in target_layers)
        self.target_layers = [int(t) for t in target_layers]
        self.teacher_path, self.cos_weight = teacher, cos_weight
        self.init_from_teacher = init_from_teacher
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._teacher: list[Upstream] = []  # a list: not part of this model's state

    def teacher(self) -> Upstream:
        if not self._teacher:
            if not self.teacher_path:
                raise ConfigError("distilhubert needs upstream.teacher=<a pre-trained hubert "
                                  "checkpoint> (python run.py mode=export upstream=hubert)")
            t = load_hubert(self.teacher_path, self.initialized.device)
            n = len(t.backbone.context.transformer.layers)
            if max(self.target_layers) > n:
                raise ConfigError(f"upstream.target_layers={self.target_layers}: the teacher "
                                  f"has layers 1..{n}")
            if t.downsample_rate != self.downsample_rate:
                raise ConfigError(f"the teacher's {t.downsample_rate} samples per frame differ "
                                  f"from the student's {self.downsample_rate}: use its front-end")
            width = t.final_proj.in_features
            if width != self.heads[0].out_features:
                raise ConfigError(f"upstream.teacher_hidden={self.heads[0].out_features}, but "
                                  f"the teacher's layers are {width} wide")
            self._teacher.append(t)
        return self._teacher[0]

    @torch.no_grad()
    def prepare(self, corpus, run_dir, device) -> None:
        """Load the teacher; a fresh student takes the teacher's front-end, position conv and
        first layers where the shapes agree (DistilHuBERT's initialisation)."""
        t = self.teacher()
        if self.init_from_teacher and not bool(self.initialized):
            mine = self.backbone.state_dict()
            for k, v in t.backbone.state_dict().items():
                if k in mine and mine[k].shape == v.shape:
                    mine[k].copy_(v)
            self.initialized.fill_(True)

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        _, _, x, n = self.backbone.encode(wavs, lengths)
        return UpstreamOutput(hidden_states=self.backbone.contextualize(x, n), lengths=n)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            target = self.teacher()(wavs, lengths)
        out = self(wavs, lengths)
        h, n = out.hidden_states[-1], out.lengths
        T = min(h.shape[1], target.hidden_states[0].shape[1])
        valid = valid_mask(n, h.shape[1])[:, :T]
        loss, logs = h.new_zeros((), dtype=torch.float32), {}
        for head, layer in zip(self.heads, self.target_layers, strict=True):
            p = head(h[:, :T])[valid].float()
            t = target.hidden_states[layer][:, :T][valid].float()
            l1 = (p - t).abs().mean()
            cos = F.cosine_similarity(p, t, dim=-1)
            loss = loss + l1 - self.cos_weight * F.logsigmoid(cos).mean()
            logs[f"l1_layer{layer}"] = l1.detach()
            logs[f"cosine_layer{layer}"] = cos.mean().detach()
        return {"loss": loss, **logs}
