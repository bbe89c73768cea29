"""data2vec (speech): Baevski, Hsu, Xu, Babu, Gu and Auli, 2022, "data2vec: A General
Framework for Self-supervised Learning in Speech, Vision and Language".

The wav2vec 2.0 backbone (conv feature encoder, transformer with conv positions) as the
student, reading masked input (p = 0.065, span 10). The teacher is an exponential moving
average of the student's transformer (conv positions, layer norm and layers; the conv
feature encoder is shared, as in the paper's speech model) and reads the unmasked input.
Targets: the average of the top K = 8 teacher layer outputs, each instance-normalised over
time; a linear head regresses them from the student's last layer at the masked steps with
smooth L1 (beta = 0.25), summed over dimensions and scaled by 1 / sqrt(D). The EMA decay
tau goes linearly from 0.999 to 0.9999 over the first 30k updates, then stays.
The averaged layer outputs are, as in the paper's code, each block's feed-forward output
before its residual sum and final layer norm (``target="ffn"``); ``target="block"`` averages
the block outputs instead (this module's earlier simplification), whose residual stream
carries the input itself.

The paper's backbone differs from wav2vec 2.0's in two places, both options here (defaults:
wav2vec 2.0's): a layer norm in every conv layer (``conv_norm="layer"``; wav2vec 2.0: a
group norm in the first) and 5 position convs of kernel 19, each with a layer norm and no
weight norm (``conv_pos_layers=5 conv_pos_kernel=19``; wav2vec 2.0: one weight-normalised
conv of kernel 128). With both, the model is HuggingFace's Data2VecAudioModel
(speechssl/hf_export.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.nn.conv_encoder import WAV2VEC2_KERNELS, WAV2VEC2_STRIDES
from speechssl.nn.ema import ema_decay, ema_update_
from speechssl.nn.masking import valid_mask
from speechssl.nn.wav2vec2_backbone import MaskedBackbone
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream

CONV_NORMS = ("group_first", "layer")  # wav2vec 2.0's, the paper's
TARGETS = ("ffn", "block")  # the paper's: feed-forward outputs; the block outputs


def instance_norm(x: Tensor, valid: Tensor, eps: float = 1e-5) -> Tensor:
    """x: (B, T, D), valid: (B, T) bool -> x normalised per sequence and channel over its
    valid frames (zero mean, unit variance); padding is zeroed."""
    w = valid.unsqueeze(-1).to(x.dtype)
    count = w.sum(1, keepdim=True).clamp(min=1)
    mean = (x * w).sum(1, keepdim=True) / count
    var = ((x - mean).pow(2) * w).sum(1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps) * w


def layer_average_targets(layers: list[Tensor], valid: Tensor, top_k: int) -> Tensor:
    """The mean of the last ``top_k`` (B, T, D) layers, each instance-normalised first."""
    return torch.stack([instance_norm(h, valid) for h in layers[-top_k:]]).mean(0)


@register_upstream("data2vec")
class Data2Vec(Upstream):
    """Hidden states: the student's transformer input and each layer (unmasked input), all
    ``hidden_size`` wide, 320 samples per frame. The teacher is saved with the weights (for
    exact resume) but no forward pass uses it."""

    tuning_modes = TRANSFORMER_TUNING

    contract_options = {"conv_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                        "ff_size": 64, "conv_pos_kernel": 8, "conv_pos_groups": 4, "top_k": 2}  # tests

    def __init__(self, conv_dim: int = 512, conv_kernels: list[int] = WAV2VEC2_KERNELS,
                 conv_strides: list[int] = WAV2VEC2_STRIDES, hidden_size: int = 768,
                 num_layers: int = 12, num_heads: int = 12, ff_size: int = 3072,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.0, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, mask_prob: float = 0.065, mask_span: int = 10,
                 top_k: int = 8, ema_start: float = 0.999, ema_end: float = 0.9999,
                 ema_anneal_steps: int = 30000, loss_beta: float = 0.25,
                 feature_grad_mult: float = 1.0, conv_norm: str = "group_first",
                 conv_pos_layers: int = 0, frontend: str = "conv", mel_bins: int = 80,
                 mel_stack: int = 2, target: str = "ffn"):
        super().__init__()
        if target not in TARGETS:
            raise ConfigError(f"upstream.target={target!r}; valid: {', '.join(TARGETS)}")
        if not 1 <= top_k <= num_layers:
            raise ConfigError(f"upstream.top_k={top_k} must be in [1, num_layers={num_layers}]")
        if not (0.0 <= ema_start <= 1.0 and 0.0 <= ema_end <= 1.0):
            raise ConfigError(f"upstream.ema_start={ema_start} and ema_end={ema_end} must be "
                              "in [0, 1]")
        if conv_norm not in CONV_NORMS:
            raise ConfigError(f"upstream.conv_norm={conv_norm!r}; valid: {', '.join(CONV_NORMS)}")
        if conv_pos_layers < 0:
            raise ConfigError(f"upstream.conv_pos_layers={conv_pos_layers} must be >= 0 (0 = "
                              "wav2vec 2.0's one weight-normalised conv)")
        self.backbone = MaskedBackbone(conv_dim, conv_kernels, conv_strides, conv_norm,
                                       hidden_size, num_layers, num_heads, ff_size, dropout,
                                       attention_dropout, feature_dropout, conv_pos_kernel,
                                       conv_pos_groups, mask_prob, mask_span, feature_grad_mult,
                                       conv_pos_layers, frontend, mel_bins, mel_stack)
        self.downsample_rate = self.backbone.features.stride
        self.teacher = copy.deepcopy(self.backbone.context).requires_grad_(False).eval()
        self.head = nn.Linear(hidden_size, hidden_size)
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.top_k, self.loss_beta, self.target = top_k, loss_beta, target
        self.ema_start, self.ema_end, self.ema_anneal_steps = ema_start, ema_end, ema_anneal_steps

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # never dropout in the teacher
        return self

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        _, _, x, n = self.backbone.encode(wavs, lengths)
        return UpstreamOutput(hidden_states=self.backbone.contextualize(x, n), lengths=n)

    @torch.no_grad()
    def targets(self, x: Tensor, n: Tensor) -> Tensor:
        """Projected unmasked features (B, T, D) -> teacher targets (B, T, D)."""
        ffn: list[Tensor] = []
        layers = self.backbone.contextualize(x.detach(), n, context=self.teacher,
                                             ffn_out=ffn)[1:]
        return layer_average_targets(ffn if self.target == "ffn" else layers,
                                     valid_mask(n, x.shape[1]), self.top_k)

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        _, _, x, n = self.backbone.encode(wavs, lengths)
        mask = self.backbone.mask(n, x.shape[1])
        pred = self.head(self.backbone.contextualize(x, n, mask)[-1])[mask]
        target = self.targets(x, n)[mask]
        per_frame = F.smooth_l1_loss(pred.float(), target.float(), reduction="none",
                                     beta=self.loss_beta).sum(-1) / pred.shape[-1] ** 0.5
        loss = per_frame.mean() if per_frame.numel() else pred.sum() * 0.0
        return {"loss": loss, "target_std": target.std(0).mean().detach() if len(target) > 1
                else torch.zeros(()), "pred_std": pred.detach().std(0).mean()
                if len(pred) > 1 else torch.zeros(()),
                "ema_decay": torch.tensor(self.current_decay())}

    def current_decay(self) -> float:
        return ema_decay(int(self.ema_steps), self.ema_start, self.ema_end, self.ema_anneal_steps)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """teacher <- tau teacher + (1 - tau) student, tau by the schedule at this update."""
        ema_update_(self.teacher, self.backbone.context, self.current_decay())
        self.ema_steps += 1
