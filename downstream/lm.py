"""Word n-gram language model for CTC beam search: interpolated Kneser-Ney estimated from
the training transcripts, written and read as ARPA (Chen & Goodman 1998), and a lexicon
beam-search decoder through torchaudio's flashlight-text ``ctc_decoder``."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch import Tensor

from speechssl.atomic import atomic_write_text
from speechssl.errors import ConfigError
from speechssl.extras import install_hint, require

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LOG10_ZERO = -99.0  # ARPA's "probability 0" (used for <s>, which is never predicted)

Gram = tuple[str, ...]


def ngram_counts(sentences: list[list[str]], order: int) -> list[Counter]:
    """Raw counts of every k-gram (k = 1..order) of the sentences padded with <s> and </s>.
    Returns ``counts`` with ``counts[k][gram]`` for k >= 1 (``counts[0]`` is empty)."""
    counts = [Counter() for _ in range(order + 1)]
    for words in sentences:
        padded = [BOS, *words, EOS]
        for k in range(1, order + 1):
            for i in range(len(padded) - k + 1):
                counts[k][tuple(padded[i:i + k])] += 1
    return counts


def kn_counts(raw: list[Counter], order: int) -> list[dict[Gram, int]]:
    """Kneser-Ney counts: the raw count at the highest order and for grams starting with <s>
    (nothing can precede them), otherwise the number of distinct words seen before the gram."""
    adjusted: list[dict[Gram, int]] = [{} for _ in range(order + 1)]
    for k in range(1, order + 1):
        if k == order:
            adjusted[k] = dict(raw[k])
            continue
        left = Counter(g[1:] for g in raw[k + 1])
        adjusted[k] = {g: (c if g[0] == BOS else left[g]) for g, c in raw[k].items()}
    adjusted[1].pop((BOS,), None)
    return adjusted


def discount(counts: dict[Gram, int]) -> float:
    """Absolute discount D = n1 / (n1 + 2 n2) (Ney et al.), clamped to [0.1, 0.9] so both the
    discounted and the back-off mass stay positive on tiny corpora."""
    values = Counter(counts.values())
    n1, n2 = values[1], values[2]
    d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
    return min(max(d, 0.1), 0.9)


class NGramLM:
    """An ARPA-style back-off model: ``logprob[k][gram]`` (log10 p of gram[-1] given the rest)
    and ``backoff[k][gram]`` (log10 back-off weight of gram used as a context)."""

    def __init__(self, order: int):
        self.order = order
        self.logprob: list[dict[Gram, float]] = [{} for _ in range(order + 1)]
        self.backoff: list[dict[Gram, float]] = [{} for _ in range(order + 1)]

    @property
    def vocab(self) -> list[str]:
        """Every word the model can predict (no <s>)."""
        return [g[0] for g in self.logprob[1] if g[0] != BOS]

    def log10_prob(self, word: str, context: list[str] | tuple[str, ...]) -> float:
        """log10 p(word | context) with ARPA back-off; unknown words score as <unk>."""
        if (word,) not in self.logprob[1]:
            word = UNK
        context = tuple(w if (w,) in self.logprob[1] else UNK for w in context)
        context = context[len(context) - self.order + 1:] if self.order > 1 else ()
        penalty = 0.0
        while True:
            gram = (*context, word)
            if gram in self.logprob[len(gram)]:
                return penalty + self.logprob[len(gram)][gram]
            if not context:  # a model without <unk>: the word has probability 0
                return penalty + LOG10_ZERO
            penalty += self.backoff[len(context)].get(context, 0.0)
            context = context[1:]


def kneser_ney(sentences: list[list[str]], order: int = 3) -> NGramLM:
    """Interpolated Kneser-Ney with one discount per order. The unigram level interpolates
    with a uniform distribution over the vocabulary (training words, </s>, <unk>), so <unk>
    gets the uniform share. The interpolated probability of every seen gram is stored; its
    context's back-off weight is the interpolation weight, so the ARPA is exact.

    Args:
        sentences: training sentences as word lists (S, variable length).
        order: n of the n-gram, >= 1.
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ConfigError(f"downstream.lm_order must be an integer >= 1, got {order!r}")
    if not any(sentences):
        raise ConfigError("cannot build an n-gram LM: the training transcripts hold no words")
    counts = kn_counts(ngram_counts(sentences, order), order)
    lm = NGramLM(order)
    prob: list[dict[Gram, float]] = [{} for _ in range(order + 1)]  # linear, for lower orders

    uni = counts[1]
    d = discount(uni)
    total = sum(uni.values())
    words = sorted({g[0] for g in uni} | {EOS, UNK})
    uniform = d * len(uni) / total / len(words)
    for w in words:
        prob[1][(w,)] = max(uni.get((w,), 0) - d, 0) / total + uniform
    for k in range(2, order + 1):
        d = discount(counts[k])
        by_context: dict[Gram, dict[Gram, int]] = defaultdict(dict)
        for g, c in counts[k].items():
            by_context[g[:-1]][g] = c
        for context, grams in by_context.items():
            denom = sum(grams.values())
            gamma = d * len(grams) / denom
            lm.backoff[k - 1][context] = math.log10(gamma)
            for g, c in grams.items():
                prob[k][g] = (c - d) / denom + gamma * prob[k - 1][g[1:]]
    for k in range(1, order + 1):
        lm.logprob[k] = {g: math.log10(p) for g, p in sorted(prob[k].items())}
    lm.logprob[1][(BOS,)] = LOG10_ZERO
    return lm


def to_arpa(lm: NGramLM) -> str:
    """The model in ARPA text format (log10 probabilities, tab separated)."""
    lines = ["", "\\data\\"]
    lines += [f"ngram {k}={len(lm.logprob[k])}" for k in range(1, lm.order + 1)]
    for k in range(1, lm.order + 1):
        lines += ["", f"\\{k}-grams:"]
        for g, lp in sorted(lm.logprob[k].items()):
            line = f"{lp:.6f}\t{' '.join(g)}"
            if k < lm.order and g in lm.backoff[k]:
                line += f"\t{lm.backoff[k][g]:.6f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def write_arpa(lm: NGramLM, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, to_arpa(lm))
    return path


def read_arpa(path: str | Path) -> NGramLM:
    """Parse an ARPA file written by ``write_arpa`` (or any standard ARPA back-off model)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ARPA file")
    sizes: dict[int, int] = {}
    section = None
    grams: dict[int, list[tuple[Gram, float, float | None]]] = defaultdict(list)
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line in ("\\data\\", "\\end\\"):
            continue
        if line.startswith("ngram ") and section is None:
            k, count = line[6:].split("=")
            sizes[int(k)] = int(count)
        elif line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:-7])
        elif section is not None:
            fields = line.split()
            try:
                if len(fields) not in (section + 1, section + 2):
                    raise ValueError
                bow = float(fields[-1]) if len(fields) == section + 2 else None
                grams[section].append((tuple(fields[1:section + 1]), float(fields[0]), bow))
            except ValueError:
                raise ConfigError(f"{path}:{n}: malformed {section}-gram line {raw!r}") from None
        else:
            raise ConfigError(f"{path}:{n}: unexpected line {raw!r}")
    if not sizes:
        raise ConfigError(f"{path}: no \\data\\ header")
    lm = NGramLM(max(sizes))
    for k, entries in grams.items():
        if len(entries) != sizes.get(k):
            raise ConfigError(f"{path}: header says {sizes.get(k)} {k}-grams, found {len(entries)}")
        for g, lp, bow in entries:
            lm.logprob[k][g] = lp
            if bow is not None:
                lm.backoff[k][g] = bow
    return lm


def write_lexicon(words: list[str], path: str | Path, sil_token: str = "|") -> Path:
    """flashlight lexicon: one line per word, "word<TAB>c h a r s |" (spelling + word boundary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(f"{w}\t{' '.join(w)} {sil_token}\n" for w in sorted(words)))
    return path


def append_word_end(log_probs: Tensor, lengths: Tensor, sil: int) -> tuple[Tensor, Tensor]:
    """Add one frame after each utterance's last valid frame that surely emits the word
    boundary ``sil``, so the lexicon decoder completes the final word (transcripts, and so
    CTC outputs, carry no trailing space). (B, T, V), (B,) -> (B, T + 1, V), (B,)."""
    B, T, V = log_probs.shape
    out = log_probs.new_full((B, T + 1, V), -1.0e4)
    out[:, :T] = log_probs
    end = log_probs.new_full((V,), -1.0e4)
    end[sil] = 0.0
    out[torch.arange(B), lengths.cpu()] = end
    return out, lengths + 1


def require_beam_search() -> None:
    """flashlight-text, which torchaudio's ctc_decoder runs on, or a ConfigError naming the
    ``beam`` extra."""
    require("flashlight.lib.text.decoder", "beam", "downstream.decoder=beam")


def beam_decoder(lexicon: str | Path, arpa: str | Path, tokens: list[str], beam_size: int,
                 lm_weight: float, word_score: float, blank_token: str, sil_token: str = "|"):
    """torchaudio's lexicon-constrained CTC beam search with the word LM (KenLM reading the
    ARPA file). Emits only lexicon words. Needs flashlight-text (the ``beam`` extra)."""
    require_beam_search()
    try:
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, RuntimeError) as e:  # flashlight-text there, but not usable
        raise ConfigError(f"downstream.decoder=beam: torchaudio's ctc_decoder does not load "
                          f"({e}); {install_hint('beam')}") from None
    return ctc_decoder(lexicon=str(lexicon), tokens=tokens, lm=str(arpa), nbest=1,
                       beam_size=beam_size, lm_weight=lm_weight, word_score=word_score,
                       blank_token=blank_token, sil_token=sil_token, unk_word=UNK)
