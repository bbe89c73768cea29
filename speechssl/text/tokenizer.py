"""WordPiece tokenization (Wu et al., 2016; as used by BERT, Devlin et al., 2019), trained with
the ``tokenizers`` package; pairs become ``[CLS] A [SEP] B [SEP]`` with segment ids 0 / 1."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from speechssl.errors import ConfigError, ManifestError

SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def train_wordpiece(texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 2):
    """A lower-casing WordPiece tokenizer trained on ``texts``; its vocabulary holds at most
    ``vocab_size`` entries, the five special tokens first (ids 0-4)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    tok = Tokenizer(models.WordPiece(unk_token=SPECIALS["unk"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               special_tokens=list(SPECIALS.values()), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = SPECIALS["cls"], SPECIALS["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    return tok


@dataclass
class Encoded:
    """One tokenized item. ids: T token ids; word_ids: the item's word index of each token
    (None for special tokens; words split on whitespace and punctuation, or the item's own
    ``words``); offsets: (start, end) characters of each token in its own text;
    sequence_ids: 0 for the first text, 1 for ``text_pair``, None for special tokens."""

    ids: list[int]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the special-token ids the text upstreams need."""

    def __init__(self, tokenizer, specials: dict[str, int | None], max_length: int = 512):
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_length = max_length
        self.pad_id = specials.get("pad") or 0
        self.cls_id, self.sep_id = specials.get("cls"), specials.get("sep")
        self.mask_id, self.unk_id = specials.get("mask"), specials.get("unk")
        self.special_ids = {i for i in specials.values() if i is not None}

    @classmethod
    def from_json(cls, text: str, max_length: int = 512) -> TextTokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(text)
        return cls(tok, {k: tok.token_to_id(v) for k, v in SPECIALS.items()}, max_length)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, item: dict) -> Encoded:
        """Tokenize an item: ``words`` (pre-split, e.g. POS) or ``text`` with an optional
        ``text_pair``; truncated to ``max_length`` tokens (the longer text first)."""
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        where = f"{item.get('_manifest', 'item')}:{item.get('_line', item.get('id', '?'))}"
        if "words" in item:
            words = item["words"]
            if not isinstance(words, list) or not words or not all(isinstance(w, str)
                                                                   for w in words):
                raise ManifestError(f"{where}: 'words' must be a non-empty list of strings")
            enc = self.tokenizer.encode(words, is_pretokenized=True)
        elif isinstance(item.get("text"), str):
            pair = item.get("text_pair")
            if pair is not None and not isinstance(pair, str):
                raise ManifestError(f"{where}: 'text_pair' must be a string")
            enc = self.tokenizer.encode(item["text"], pair)
        else:
            raise ManifestError(f"{where}: a text item needs a 'text' string or a 'words' list")
        return Encoded(list(enc.ids), list(enc.word_ids), [tuple(o) for o in enc.offsets],
                       list(enc.sequence_ids))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def hf_text_tokenizer(path, max_length: int = 512) -> TextTokenizer:
    """The fast tokenizer saved in a local transformers model directory, as a TextTokenizer."""
    from speechssl.extras import require

    transformers = require("transformers", "hf", f"upstream.path={path} (a HuggingFace tokenizer)")

    try:
        hf = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"upstream.path={path}: no usable tokenizer in that directory "
                          f"({e})") from None
    if not getattr(hf, "is_fast", False):
        raise ConfigError(f"upstream.path={path}: the tokenizer is not a fast tokenizer "
                          f"(save one with tokenizer.json or vocab.txt)")
    specials = {"pad": hf.pad_token_id, "unk": hf.unk_token_id, "cls": hf.cls_token_id,
                "sep": hf.sep_token_id, "mask": hf.mask_token_id}
    limit = min(max_length, int(getattr(hf, "model_max_length", max_length) or max_length))
    return TextTokenizer(hf.backend_tokenizer, specials, limit)
