"""ASR: character CTC with a 2-layer BiLSTM probe, greedy decoding, WER (SUPERB, no LM)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from downstream.base import register_task
from downstream.ctc import CTCTask
from speechssl import metrics
from speechssl.errors import ManifestError
from speechssl.nn.rnn import BiLSTM


class BiLSTMCTC(nn.Module):
    """Optional frame stacking (``downsample`` frames concatenated), a linear projection,
    a bidirectional LSTM stack and a linear output layer: (B, T, D) -> (B, T', V)."""

    def __init__(self, feature_dim: int, vocab_size: int, hidden_size: int = 256,
                 num_layers: int = 2, proj_dim: int = 256, dropout: float = 0.2,
                 downsample: int = 1):
        super().__init__()
        self.downsample = downsample
        self.proj = nn.Linear(feature_dim * downsample, proj_dim)
        self.lstm = BiLSTM(proj_dim, hidden_size, num_layers=num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.downsample > 1:
            B, T, D = x.shape
            T2 = T // self.downsample
            x = x[:, : T2 * self.downsample].reshape(B, T2, D * self.downsample)
            lengths = torch.div(lengths, self.downsample, rounding_mode="floor").clamp(min=1)
        x = self.dropout(torch.relu(self.proj(x)))
        return self.out(self.dropout(self.lstm(x, lengths))), lengths


@register_task("asr")
class SpeechRecognition(CTCTask):
    metric = "wer"
    higher_is_better = False

    def __init__(self, hidden_size: int = 256, num_layers: int = 2, proj_dim: int = 256,
                 dropout: float = 0.2, downsample: int = 1):
        self.probe_options = dict(hidden_size=hidden_size, num_layers=num_layers,
                                  proj_dim=proj_dim, dropout=dropout, downsample=downsample)

    def tokens(self, item: dict) -> list[str]:
        if "text" not in item:
            raise ManifestError(f"{item.get('_manifest')}:{item.get('_line')}: no 'text' field")
        return list(" ".join(item["text"].lower().split()))

    def join(self, tokens: list[str]) -> str:
        return " ".join("".join(tokens).split())

    def build_probe(self, feature_dim: int) -> nn.Module:
        return BiLSTMCTC(feature_dim, len(self.vocab), **self.probe_options)

    def score(self, predictions, references) -> dict[str, float]:
        return {"wer": metrics.wer(references, predictions),
                "cer": metrics.cer(references, predictions)}
