"""Audio SNIPS (Lai et al. 2021, the SUPERB SF corpus; text from Coucke et al. 2018):
``all.iob.snips.txt`` plus ``{train,valid,test}/<speaker>-snips-<split>-<n>.wav``."""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_dir,
    option_list,
    read_lines,
    strip_labels,
)
from speechssl.errors import ManifestError

SPLITS = {"train": "train", "dev": "valid", "test": "test"}
PLAIN_SLOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # SNIPS slot names: city, object_type, ...


def parse_iob(words: list[str], tags: list[str], where: str) -> tuple[str, list[dict]]:
    """Words and their tags -> (text, slots with character offsets into text). A tag is
    ``O``, ``B-<type>`` / ``I-<type>`` (IOB), or a plain ``<type>`` as in the Audio SNIPS
    release that s3prl reads ("O O from_location O to_location to_location"): a plain tag
    continues the slot of the word before when that has the same type, else starts one.

    >>> parse_iob(["play", "jazz", "now"], ["O", "B-genre", "O"], "x")[1]
    [{'start': 5, 'end': 9, 'type': 'genre', 'value': 'jazz'}]
    >>> parse_iob(["to", "new", "york"], ["O", "city", "city"], "x")[1]
    [{'start': 3, 'end': 11, 'type': 'city', 'value': 'new york'}]
    """
    text, slots, offset = " ".join(words), [], 0
    for word, tag in zip(words, tags, strict=True):
        start, end = offset, offset + len(word)
        offset = end + 1
        if tag == "O":
            continue
        prefix, _, kind = tag.partition("-")
        if prefix not in ("B", "I") or not kind:
            if not PLAIN_SLOT.fullmatch(tag):
                raise ManifestError(f"{where}: bad slot tag {tag!r} for word {word!r} "
                                    "(expected O, B-<type>, I-<type> or a slot name)")
            prefix, kind = "I", tag
        if prefix == "I" and slots and slots[-1]["type"] == kind and slots[-1]["end"] == start - 1:
            slots[-1]["end"] = end
            slots[-1]["value"] = text[slots[-1]["start"]:end]
        else:
            slots.append({"start": start, "end": end, "type": kind, "value": word})
    return text, slots


def parse_line(line: str, where: str) -> tuple[str, dict]:
    """``<uid> BOS w1 .. wn EOS<TAB>O t1 .. tn <intent>`` -> (uid, labels)."""
    words_part, sep, tags_part = line.partition("\t")
    words, tags = words_part.split(), tags_part.split()
    if (not sep or len(words) < 3 or words[1] != "BOS" or words[-1] != "EOS"
            or len(tags) != len(words) - 1):
        raise ManifestError(f"{where}: expected '<uid> BOS words EOS<TAB>O tags <intent>' with "
                            f"one tag per word, got {line[:120]!r}")
    text, slots = parse_iob(words[2:-1], tags[1:-1], where)
    return words[0], {"text": text, "slots": slots, "intent": tags[-1]}


@READERS.register("snips")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``sf`` and ``pretrain``: a split holds the split folder's utterances whose
    speaker (the file-name prefix) is in ``corpus.<split>_speakers`` (the SUPERB lists)."""
    labels = {}
    for where, _, line in read_lines(root / "all.iob.snips.txt", "SNIPS label file"):
        uid, lab = parse_line(line, where)
        labels[uid] = lab
    sf_ = {}
    for split, folder in SPLITS.items():
        speakers = set(option_list(cfg, f"{split}_speakers"))
        items = []
        for wav in sorted(check_dir(root / folder, f"SNIPS {folder}").rglob("*.wav")):
            speaker = wav.stem.split("-")[0]
            if speaker not in speakers:
                continue
            if wav.stem not in labels:
                raise ManifestError(f"{wav}: no line for {wav.stem!r} in "
                                    f"{root / 'all.iob.snips.txt'}")
            items.append({"id": wav.stem, "path": str(wav), "speaker": speaker,
                          **labels[wav.stem]})
        if not items:
            raise ManifestError(f"{root / folder}: no wavs of speakers "
                                f"{', '.join(sorted(speakers))} (corpus.{split}_speakers)")
        sf_[split] = add_durations(items)
    return {"sf": sf_, "pretrain": {s: strip_labels(sf_[s]) for s in ("train", "dev")}}, {}, {}
