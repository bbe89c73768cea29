"""Real text sets read in their published formats: GLUE TSV files (Wang et al., 2019),
SQuAD v1.1 JSON (Rajpurkar et al., 2016) and CoNLL-U treebanks (Universal Dependencies,
Nivre et al., 2016), scanned into the text manifests the text tasks read.

Splits: the official dev set is our test split (GLUE and SQuAD test labels are hidden), and
``corpus.dev_fraction`` of the official training set (chosen by a hash of the item id,
so it is stable) is our dev split. CoNLL-U keeps its train/dev/test files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from speechssl.data.corpora.common import check_file, stable_fraction
from speechssl.data.manifest import write_manifest
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


def _dev_fraction(cfg) -> float:
    frac = float(cfg.get("dev_fraction", 0.1))
    if not 0.0 < frac < 1.0:
        raise ConfigError(f"corpus.dev_fraction={frac}: must be between 0 and 1")
    return frac


def _train_dev(items: list[dict], frac: float, where: Path) -> dict[str, list[dict]]:
    dev = [it for it in items if stable_fraction(it["id"]) < frac]
    train = [it for it in items if stable_fraction(it["id"]) >= frac]
    if not train or not dev:
        raise ManifestError(f"{where}: too few items ({len(items)}) for a train/dev split")
    return {"train": train, "dev": dev}


def _write(out: Path, subset: str, splits: dict[str, list[dict]], meta: dict) -> tuple:
    """Manifests written here (text items have no audio durations); returns what
    load_real_corpus expects, with the subsets and counts in the meta."""
    for split, items in splits.items():
        write_manifest(out / "manifests" / subset / f"{split}.jsonl", items)
    counts = {subset: {s: len(v) for s, v in splits.items()}}
    return {}, {"modality": "text", "subsets": [subset], "counts": counts, "hours": {}, **meta}, {}


# --------------------------------------------------------------------------- GLUE

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


def scan_glue(root: Path, cfg, out: Path) -> tuple:
    """``corpus=glue corpus.root=<GLUE dir or task dir> corpus.task=<name>``."""
    task = str(cfg.get("task"))
    if task not in GLUE:
        raise ConfigError(f"corpus.task={task!r}; valid GLUE tasks: {', '.join(GLUE)}")
    folder, *_, subset, dev_file = GLUE[task]
    base = root / folder if (root / folder).is_dir() else root
    train = read_glue_tsv(base / "train.tsv", task)
    test = read_glue_tsv(base / dev_file, task)
    splits = {**_train_dev(train, _dev_fraction(cfg), base / "train.tsv"), "test": test}
    return _write(out, subset, splits, {"glue_task": task})


# --------------------------------------------------------------------------- SQuAD

def read_squad(path: Path) -> list[dict]:
    """SQuAD v1.1 JSON -> items (question as text, context as text_pair, answers with
    character starts); ManifestError names the file and the question id."""
    check_file(path, "SQuAD JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ManifestError(f"{path}: not a SQuAD JSON file ({e!r})") from None
    items = []
    for article in data:
        for para in article.get("paragraphs", []):
            context = para.get("context")
            for qa in para.get("qas", []):
                qid = qa.get("id", "?")
                answers = [{"text": a.get("text"), "start": a.get("answer_start")}
                           for a in qa.get("answers", [])]
                ok = isinstance(context, str) and isinstance(qa.get("question"), str) and answers
                for a in answers:
                    ok = ok and isinstance(a["text"], str) and isinstance(a["start"], int) and \
                        context[a["start"]: a["start"] + len(a["text"])] == a["text"]
                if not ok:
                    raise ManifestError(f"{path}: question {qid!r}: missing question/context/"
                                        f"answers, or an answer_start that does not point at "
                                        f"its answer text")
                items.append({"id": str(qid), "text": qa["question"], "text_pair": context,
                              "answers": answers})
    if not items:
        raise ManifestError(f"{path}: no questions")
    return items


def scan_squad(root: Path, cfg, out: Path) -> tuple:
    """``corpus=squad corpus.root=<dir with train-v1.1.json and dev-v1.1.json>``."""
    train = read_squad(root / str(cfg.get("train_file", "train-v1.1.json")))
    test = read_squad(root / str(cfg.get("dev_file", "dev-v1.1.json")))
    splits = {**_train_dev(train, _dev_fraction(cfg), root), "test": test}
    return _write(out, "text-qa", splits, {})


# --------------------------------------------------------------------------- CoNLL-U

def read_conllu(path: Path) -> list[dict]:
    """A CoNLL-U file -> one item per sentence: words (FORM) and tags (UPOS). Multi-word
    token ranges (1-2) and empty nodes (1.1) are skipped, as in UD's word-level scoring."""
    check_file(path, "CoNLL-U file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read CoNLL-U ({e})") from None
    items, words, tags, sent_id, first = [], [], [], None, 0
    for lineno, line in enumerate(lines + [""], start=1):
        line = line.rstrip("\r")
        if line.startswith("#"):
            if line.startswith("# sent_id"):
                sent_id = line.split("=", 1)[-1].strip()
            continue
        if not line.strip():
            if words:
                items.append({"id": sent_id or f"{path.stem}-{first}", "words": words,
                              "tags": tags, "text": " ".join(words)})
            words, tags, sent_id = [], [], None
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ManifestError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U fields, "
                                f"got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue
        if not words:
            first = lineno
        words.append(cols[1])
        tags.append(cols[3])
    if not items:
        raise ManifestError(f"{path}: no sentences")
    seen = set()
    for it in items:  # sent_id may repeat across documents: keep ids unique
        if it["id"] in seen:
            it["id"] = f"{it['id']}@{len(seen)}"
        seen.add(it["id"])
    return items


def scan_conllu(root: Path, cfg, out: Path) -> tuple:
    """``corpus=conllu corpus.root=<treebank dir>``: ``*-ud-{train,dev,test}.conllu``."""
    splits = {}
    for split in ("train", "dev", "test"):
        files = sorted(root.glob(f"*-ud-{split}.conllu"))
        if len(files) != 1:
            raise ManifestError(f"{root}: expected one *-ud-{split}.conllu file, found "
                                f"{len(files)}")
        splits[split] = read_conllu(files[0])
    return _write(out, "text-pos", splits, {})
