"""GLUE (Wang et al., 2019) read from its TSV files into the text manifests the text tasks
read: single sentences (CoLA, SST-2) into ``text-sst2``, sentence pairs into ``text-nli``.
The official dev file is our test split (GLUE's test labels are hidden); our dev split is
cut from ``train.tsv`` (``common.train_dev_split``)."""

from __future__ import annotations

import csv
from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    check_file,
    dev_fraction,
    train_dev_split,
    write_text_manifests,
)
from speechssl.errors import ConfigError, ManifestError

# task -> (folder, has header, first text column, second text column or None, label column,
#          subset, official dev file)
GLUE = {
    "CoLA": ("CoLA", False, 3, None, 1, "text-sst2", "dev.tsv"),
    "SST-2": ("SST-2", True, "sentence", None, "label", "text-sst2", "dev.tsv"),
    "MRPC": ("MRPC", True, "#1 String", "#2 String", "Quality", "text-nli", "dev.tsv"),
    "QQP": ("QQP", True, "question1", "question2", "is_duplicate", "text-nli", "dev.tsv"),
    "STS-B": ("STS-B", True, "sentence1", "sentence2", "score", "text-nli", "dev.tsv"),
    "MNLI": ("MNLI", True, "sentence1", "sentence2", "gold_label", "text-nli",
             "dev_matched.tsv"),
    "QNLI": ("QNLI", True, "question", "sentence", "label", "text-nli", "dev.tsv"),
    "RTE": ("RTE", True, "sentence1", "sentence2", "label", "text-nli", "dev.tsv"),
    "WNLI": ("WNLI", True, "sentence1", "sentence2", "label", "text-nli", "dev.tsv"),
}
csv.field_size_limit(1 << 24)


def read_glue_tsv(path: Path, task: str) -> list[dict]:
    """One GLUE TSV file -> items with text, (text_pair,) label; ManifestError names
    ``<file>:<line>`` for a row with too few fields or an empty text/label."""
    _, header, col_a, col_b, col_label, _, _ = GLUE[task]
    check_file(path, f"GLUE {task} file")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read GLUE TSV ({e})") from None
    start, names = 0, None
    if header:
        if not rows:
            raise ManifestError(f"{path}: empty file")
        names, start = rows[0], 1
        missing = [c for c in (col_a, col_b, col_label) if c is not None and c not in names]
        if missing:
            raise ManifestError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
    index = (lambda c: names.index(c)) if names else (lambda c: c)
    cols = [index(c) for c in (col_a, col_b, col_label) if c is not None]
    items = []
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(cols):
            raise ManifestError(f"{path}:{lineno}: expected at least {max(cols) + 1} "
                                f"tab-separated fields, got {len(row)}")
        item = {"id": f"{task}-{path.stem}-{lineno}", "text": row[index(col_a)].strip(),
                "label": row[index(col_label)].strip()}
        if col_b is not None:
            item["text_pair"] = row[index(col_b)].strip()
        if not item["text"] or not item["label"] or item.get("text_pair") == "":
            raise ManifestError(f"{path}:{lineno}: empty text or label")
        items.append(item)
    if not items:
        raise ManifestError(f"{path}: no rows")
    return items


@READERS.register("glue")
def scan(root: Path, cfg, out: Path) -> tuple:
    """``corpus=glue corpus.root=<GLUE dir or task dir> corpus.task=<name>``."""
    task = str(cfg.get("task"))
    if task not in GLUE:
        raise ConfigError(f"corpus.task={task!r}; valid GLUE tasks: {', '.join(GLUE)}")
    folder, *_, subset, dev_file = GLUE[task]
    base = root / folder if (root / folder).is_dir() else root
    train = read_glue_tsv(base / "train.tsv", task)
    test = read_glue_tsv(base / dev_file, task)
    splits = {**train_dev_split(train, dev_fraction(cfg), base / "train.tsv"), "test": test}
    return write_text_manifests(out, subset, splits, {"glue_task": task})
