"""SQuAD v1.1 (Rajpurkar et al., 2016) read from its JSON files into the ``text-qa``
manifests (question as text, context as text_pair, answers with character starts). The
official dev set is our test split (the test set is hidden); our dev split is cut from the
training set (``common.train_dev_split``)."""

from __future__ import annotations

import json
from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    check_file,
    dev_fraction,
    train_dev_split,
    write_text_manifests,
)
from speechssl.errors import ManifestError


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


@READERS.register("squad")
def scan(root: Path, cfg, out: Path) -> tuple:
    """``corpus=squad corpus.root=<dir with train-v1.1.json and dev-v1.1.json>``."""
    train = read_squad(root / str(cfg.get("train_file", "train-v1.1.json")))
    test = read_squad(root / str(cfg.get("dev_file", "dev-v1.1.json")))
    splits = {**train_dev_split(train, dev_fraction(cfg), root), "test": test}
    return write_text_manifests(out, "text-qa", splits, {})
