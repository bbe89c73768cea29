"""LibriSpeech (Panayotov et al. 2015) for ASR and PR: ``<root>/<subset>/<spk>/<chapter>/``
with ``<spk>-<chapter>.trans.txt`` and ``<utt>.flac``; phonemes from a user lexicon."""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_dir,
    option_list,
    read_lines,
    split_ws,
    strip_labels,
)
from speechssl.errors import ConfigError, ManifestError

LEXICON_HINT = ("set corpus.lexicon=<path> to a lexicon with lines 'WORD PH1 PH2 ...' "
                "(e.g. s3prl's librispeech-lexicon.txt) to get phonemes for PR")
_STRESS = re.compile(r"\d+$")


def read_lexicon(path: Path, strip_stress: bool = False) -> dict[str, list[str]]:
    """``WORD PH1 PH2 ...`` lines -> {WORD (upper case): phonemes}; the first
    pronunciation of a word wins (deterministic, as s3prl's libriphone does)."""
    lexicon: dict[str, list[str]] = {}
    for where, _, line in read_lines(path, "lexicon"):
        word, *phones = split_ws(line)
        if not phones:
            raise ManifestError(f"{where}: lexicon line {line!r} has a word but no phonemes")
        if strip_stress:
            phones = [_STRESS.sub("", p) for p in phones]
        lexicon.setdefault(word.upper(), phones)
    return lexicon


def phonemize(text: str, lexicon: dict[str, list[str]], where: str) -> str:
    """Words -> space-separated phonemes; an unknown word is a ManifestError at ``where``."""
    out = []
    for word in text.split():
        if word.upper() not in lexicon:
            raise ManifestError(f"{where}: word {word!r} is not in the lexicon (corpus.lexicon)")
        out.extend(lexicon[word.upper()])
    return " ".join(out)


def read_subset(root: Path, subset: str) -> list[dict]:
    """All utterances of one LibriSpeech subset directory (e.g. ``train-clean-100``):
    id, path (the .flac beside the transcript), text (as published), speaker."""
    base = check_dir(root / subset, f"LibriSpeech subset {subset!r}")
    items = []
    for trans in sorted(base.glob("*/*/*.trans.txt")):
        for where, _, line in read_lines(trans, "LibriSpeech transcript"):
            utt, _, text = line.partition(" ")
            parts = utt.split("-")
            if len(parts) != 3 or not text.strip():
                raise ManifestError(f"{where}: expected '<spk>-<chapter>-<utt> TEXT', got {line!r}")
            audio = trans.parent / f"{utt}.flac"
            if not audio.is_file():
                raise ManifestError(f"{where}: audio file not found: {audio}")
            items.append({"id": utt, "path": str(audio), "text": text.strip(),
                          "speaker": parts[0], "_where": where})
    if not items:
        raise ManifestError(f"{base}: no '<spk>/<chapter>/<spk>-<chapter>.trans.txt' files")
    return items


@READERS.register("librispeech")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``asr`` and ``pretrain`` for the splits named by ``corpus.train/dev/test``."""
    lexicon = None
    if cfg.get("lexicon"):
        path = Path(str(cfg.lexicon)).expanduser()
        if not path.is_file():
            raise ConfigError(f"corpus.lexicon={cfg.lexicon!r}: file not found")
        lexicon = read_lexicon(path, strip_stress=bool(cfg.get("strip_stress", False)))
    asr = {}
    for split in ("train", "dev", "test"):
        names = option_list(cfg, split)
        if not names:
            raise ConfigError(f"corpus.{split} is empty: name LibriSpeech subsets, "
                              f"e.g. corpus.{split}=[dev-clean]")
        items = [it for name in names for it in read_subset(root, name)]
        if lexicon is not None:
            for it in items:
                it["phonemes"] = phonemize(it["text"], lexicon, it["_where"])
        asr[split] = add_durations(items)
    meta = {"hints": {} if lexicon is not None else {"phonemes": LEXICON_HINT}}
    manifests = {"asr": asr, "pretrain": {s: strip_labels(asr[s]) for s in ("train", "dev")}}
    return manifests, meta, {}
