"""What the text tasks share: their splits (text manifests) and the token alignment that
feature extraction attaches to each item (pooling a sentence into one vector, Devlin et
al., 2019's [CLS] state, is in downstream.utterance)."""

from __future__ import annotations

from downstream.base import Task
from speechssl.data.corpus import read_meta
from speechssl.errors import ConfigError, ManifestError


def where(item: dict) -> str:
    return f"{item.get('_manifest', 'item')}:{item.get('_line', item.get('id', '?'))}"


def encoding(item: dict):
    """The item's tokenization (speechssl.text.tokenizer.Encoded), set by feature extraction
    with a text upstream; a ConfigError when the features did not come from one."""
    enc = item.get("_tokens")
    if enc is None:
        raise ConfigError(f"{where(item)}: no token alignment: text tasks need a text upstream "
                          f"(upstream=bert, gpt or a BERT-family upstream=hf)")
    return enc


class TextTask(Task):
    """A task on one text subset (train/dev/test) of the corpus; see speechssl.text.data."""

    modality = "text"
    subset = ""

    def splits(self, corpus) -> dict[str, list[dict]]:
        from speechssl.text.data import text_items, text_root

        root = text_root(corpus)
        self.corpus_meta = read_meta(root / "meta.json", (),
                                     f"delete {root} to generate or scan it again")
        return {s: text_items(corpus, self.subset, s) for s in ("train", "dev", "test")}


def label_of(item: dict, key: str = "label") -> str:
    if key not in item:
        raise ManifestError(f"{where(item)}: no {key!r} field")
    return str(item[key])
