"""Text items and batches: where a corpus keeps its text subsets (the synthesized text
corpus beside the speech one, or a scanned GLUE / SQuAD / CoNLL-U copy), a dataset that
tokenizes items on the fly, and the padded (B, T) token batch (Devlin et al., 2019)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from speechssl.data.manifest import read_manifest
from speechssl.errors import ConfigError


def text_root(corpus):
    """The directory holding ``corpus``'s text manifests. A synthesized speech corpus gets
    its text twin generated beside it on first use (the speech files are not touched)."""
    from pathlib import Path

    if corpus.meta.get("modality") == "text":
        return Path(corpus.root)
    if str(corpus.name).startswith("synth-") and "size" in corpus.meta:
        from speechssl.data.synth.text_corpus import ensure_text_corpus

        return ensure_text_corpus(Path(corpus.root).parent, corpus.meta["size"],
                                  corpus.meta["seed"])
    raise ConfigError(f"corpus {corpus.name!r} has no text: use corpus=synth (text generated "
                      f"with it), corpus=glue, corpus=squad or corpus=conllu (docs/text.md)")


def text_items(corpus, subset: str, split: str) -> list[dict]:
    """Items of a text subset (``text-sst2``, ``text-pos``, ``text-nli``, ``text-qa``,
    ``text-pretrain``); errors name the manifest line, or the subsets the corpus has."""

    root = text_root(corpus)
    meta = {}
    if (root / "meta.json").is_file():
        from speechssl.data.corpus import read_meta

        meta = read_meta(root / "meta.json", (), f"delete {root} to generate or scan it again")
    provided = meta.get("subsets")
    if provided is not None and subset not in provided:
        raise ConfigError(f"corpus {corpus.name!r} has no {subset!r} subset (it provides "
                          f"{', '.join(provided)}); see docs/text.md for which task reads what")
    return read_manifest(root / "manifests" / subset / f"{split}.jsonl", root=root,
                         required=("id",), check_files=False)


def approx_tokens(item: dict) -> int:
    """A length estimate for batching before tokenization: words + 3 special tokens."""
    if "words" in item:
        return len(item["words"]) + 2
    return len(str(item.get("text", "")).split()) + len(str(item.get("text_pair") or "").split()) + 3


class TextDataset(Dataset):
    """items -> {"index", "item", "ids": (T,) long}; ``encode`` maps an item to token ids
    and is looked up at each access (a text upstream trains its tokenizer in ``prepare``)."""

    def __init__(self, items: list[dict], encode):
        self.items, self.encode = items, encode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ids = self.encode(self.items[i])
        return {"index": i, "item": self.items[i], "ids": torch.tensor(ids, dtype=torch.long)}


def pad_ids(seqs: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[(T_i,)] long -> (B, T_max) right-padded with ``pad_id``, (B,) lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        out[b, : len(s)] = s
    return out, lengths


def collate_text(batch: list[dict], pad_id: int = 0) -> dict:
    """-> {"tokens": (B, T) long, "lengths": (B,), "index": (B,), "items": [dict]}."""
    tokens, lengths = pad_ids([b["ids"] for b in batch], pad_id)
    return {"tokens": tokens, "lengths": lengths,
            "index": torch.tensor([b["index"] for b in batch]), "items": [b["item"] for b in batch]}
