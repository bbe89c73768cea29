"""CoNLL-U treebanks (Universal Dependencies, Nivre et al., 2016) read into the
``text-pos`` manifests: words (FORM) and tags (UPOS); the treebank's own train/dev/test
files are the splits."""

from __future__ import annotations

from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import check_file, write_text_manifests
from speechssl.errors import ManifestError


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


@READERS.register("conllu")
def scan(root: Path, cfg, out: Path) -> tuple:
    """``corpus=conllu corpus.root=<treebank dir>``: ``*-ud-{train,dev,test}.conllu``."""
    splits = {}
    for split in ("train", "dev", "test"):
        files = sorted(root.glob(f"*-ud-{split}.conllu"))
        if len(files) != 1:
            raise ManifestError(f"{root}: expected one *-ud-{split}.conllu file, found "
                                f"{len(files)}")
        splits[split] = read_conllu(files[0])
    return write_text_manifests(out, "text-pos", splits, {})
