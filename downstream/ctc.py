"""Shared pieces of the CTC tasks (PR, ASR): token vocabulary, loss, greedy decoding."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from downstream.base import Task
from speechssl.errors import ManifestError

BLANK = 0


def greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int = BLANK) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. (B, T, V) -> token ids."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for seq, n in zip(best, lengths.tolist(), strict=True):
        seq = torch.unique_consecutive(seq[:n]).tolist()
        out.append([t for t in seq if t != blank])
    return out


class CTCTask(Task):
    """Frame-level token posteriors trained with CTC; subclasses say what a token is."""

    subset = "asr"

    def tokens(self, item: dict) -> list[str]:
        raise NotImplementedError

    def join(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def splits(self, corpus) -> dict[str, list[dict]]:
        return {s: corpus.items(self.subset, s) for s in ("train", "dev", "test")}

    def setup(self, train_items: list[dict]) -> None:
        symbols = sorted({t for it in train_items for t in self.tokens(it)})
        self.vocab = ["<blank>"] + symbols
        self.index = {s: i for i, s in enumerate(self.vocab)}

    def encode(self, item: dict) -> list[int]:
        try:
            return [self.index[t] for t in self.tokens(item)]
        except KeyError as e:
            raise ManifestError(f"{item.get('_manifest')}:{item.get('_line')}: token {e.args[0]!r} "
                                f"never occurs in the training split") from None

    def log_probs(self, probe, features, lengths) -> tuple[Tensor, Tensor]:
        logits, out_lengths = probe(features, lengths)
        return F.log_softmax(logits.float(), dim=-1), out_lengths

    def loss(self, probe, features, lengths, batch) -> Tensor:
        log_probs, out_lengths = self.log_probs(probe, features, lengths)
        targets = [torch.tensor(self.encode(it), dtype=torch.long) for it in batch["items"]]
        target_lengths = torch.tensor([len(t) for t in targets])
        return F.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), out_lengths.cpu(),
                          target_lengths, blank=BLANK, reduction="mean", zero_infinity=True)

    def predict(self, probe, features, lengths, batch) -> list[str]:
        log_probs, out_lengths = self.log_probs(probe, features, lengths)
        return [self.join([self.vocab[i] for i in seq])
                for seq in greedy_decode(log_probs, out_lengths)]

    def reference(self, item: dict) -> str:
        return self.join(self.tokens(item))
