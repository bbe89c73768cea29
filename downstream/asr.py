"""ASR: character CTC with a 2-layer BiLSTM probe, WER (SUPERB, Yang et al. 2021); greedy
decoding by default, or lexicon beam search with a word n-gram LM of the training transcripts
(SUPERB's "with LM" column uses a LibriSpeech 4-gram the same way)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from downstream.base import register_task
from downstream.ctc import BLANK, CTCTask
from downstream.lm import (
    EOS,
    UNK,
    append_word_end,
    beam_decoder,
    kneser_ney,
    require_beam_search,
    to_arpa,
    write_lexicon,
)
from speechssl import metrics
from speechssl.atomic import atomic_write_text
from speechssl.errors import ConfigError, ManifestError
from speechssl.nn.rnn import BiLSTM
from speechssl.nn.specaugment import SpecAugment

DECODERS = ("greedy", "beam")
SIL = "|"  # the word boundary token of the flashlight lexicon decoder (our " ")


class BiLSTMCTC(nn.Module):
    """Optional SpecAugment of the features while training (s3prl's, ``specaugment``),
    optional frame stacking (``downsample`` frames concatenated), a linear projection,
    a bidirectional LSTM stack and a linear output layer: (B, T, D) -> (B, T', V)."""

    def __init__(self, feature_dim: int, vocab_size: int, hidden_size: int = 256,
                 num_layers: int = 2, proj_dim: int = 256, dropout: float = 0.2,
                 downsample: int = 1, specaugment: bool = False):
        super().__init__()
        self.specaug = SpecAugment() if specaugment else None
        self.downsample = downsample
        self.proj = nn.Linear(feature_dim * downsample, proj_dim)
        self.lstm = BiLSTM(proj_dim, hidden_size, num_layers=num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.specaug is not None:  # training only (the identity in eval)
            x = self.specaug(x, lengths)
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
                 dropout: float = 0.2, downsample: int = 1, decoder: str = "greedy",
                 beam_size: int = 50, lm_order: int = 3, lm_weight: float = 2.0,
                 word_score: float = 0.0, lm_dir: str | None = None,
                 specaugment: bool = False):
        self.probe_options = dict(hidden_size=hidden_size, num_layers=num_layers,
                                  proj_dim=proj_dim, dropout=dropout, downsample=downsample,
                                  specaugment=bool(specaugment))
        if decoder not in DECODERS:
            raise ConfigError(f"downstream.decoder must be one of {', '.join(DECODERS)}, "
                              f"got {decoder!r}")
        for key, value in (("beam_size", beam_size), ("lm_order", lm_order)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"downstream.{key} must be an integer >= 1, got {value!r}")
        if decoder == "beam":
            require_beam_search()  # before any training: the decoder runs at the end
        self.decoder, self.beam_size, self.lm_order = decoder, beam_size, lm_order
        self.lm_weight, self.word_score, self.lm_dir = float(lm_weight), float(word_score), lm_dir
        self.lm_files: tuple[Path, Path] | None = None
        self._beam = None

    def setup(self, train_items: list[dict]) -> None:
        super().setup(train_items)
        self._beam = None
        if self.decoder == "beam":
            self.lm_files = self.build_lm(train_items)

    def build_lm(self, train_items: list[dict]) -> tuple[Path, Path]:
        """Kneser-Ney ``lm_order``-gram of the training transcripts and the lexicon of their
        words, written to ``<lm_dir>/<content hash>/{lm.arpa,lexicon.txt}``."""
        lm = kneser_ney([self.reference(it).split() for it in train_items], self.lm_order)
        arpa = to_arpa(lm)
        root = Path(self.lm_dir) if self.lm_dir else Path(tempfile.gettempdir()) / "speechssl-lm"
        directory = root / hashlib.sha256(arpa.encode()).hexdigest()[:12]
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "lm.arpa", arpa)
        words = [w for w in lm.vocab if w not in (EOS, UNK)]
        write_lexicon(words, directory / "lexicon.txt", sil_token=SIL)
        print(f"[asr] {self.lm_order}-gram Kneser-Ney LM over {len(words)} training words: "
              f"{directory / 'lm.arpa'}")
        return directory / "lm.arpa", directory / "lexicon.txt"

    def decoder_tokens(self) -> list[str]:
        """The CTC vocabulary as the flashlight decoder names it (" " -> "|")."""
        if " " not in self.index:
            raise ConfigError("downstream.decoder=beam needs word boundaries: no training "
                              "transcript has two words")
        if SIL in self.index:
            raise ConfigError(f"downstream.decoder=beam: the transcripts use {SIL!r}, the "
                              f"decoder's word-boundary token")
        return [SIL if t == " " else t for t in self.vocab]

    def beam_search(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        """Lexicon beam search with the word LM: (B, T, V) log-probs, (B,) -> B transcripts."""
        if self._beam is None:
            arpa, lexicon = self.lm_files
            self._beam = beam_decoder(lexicon, arpa, self.decoder_tokens(), self.beam_size,
                                      self.lm_weight, self.word_score,
                                      blank_token=self.vocab[BLANK], sil_token=SIL)
        emissions, n = append_word_end(log_probs.detach().float().cpu(), lengths.cpu(),
                                       self.index[" "])
        hyps = self._beam(emissions.contiguous(), n.to(torch.int32))
        return [" ".join(h[0].words) if h else "" for h in hyps]

    def predict(self, probe, features, lengths, batch) -> list[str]:
        if self.decoder == "greedy":
            return super().predict(probe, features, lengths, batch)
        return self.beam_search(*self.log_probs(probe, features, lengths))

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
