"""SF: slot filling (SNIPS) as CTC over the transcript with each slot value wrapped in
``B-<type>`` / ``E-<type>`` tokens; slot-type F1 and slot-value CER (SUPERB, Yang et al.
2021; the tagging and parsing follow s3prl's SNIPS recipe)."""

from __future__ import annotations

from downstream.asr import BiLSTMCTC
from downstream.base import register_task
from downstream.ctc import CTCTask
from speechssl import metrics
from speechssl.errors import ManifestError


def _where(item: dict) -> str:
    return f"{item.get('_manifest')}:{item.get('_line')}"


def is_tag(word: str) -> bool:
    """``B-<type>`` or ``E-<type>`` with a non-empty type."""
    return len(word) > 2 and word[:2] in ("B-", "E-")


def tag_text(item: dict) -> str:
    """The item's ``text`` with every slot value wrapped in its tags, e.g.
    "play some B-genre blues E-genre music"; words lower-cased (tags keep their upper-case
    ``B-``/``E-``, so no word of the text can look like a tag), whitespace normalized.

    Slots are ``{"start", "end", "type", "value"}`` with character offsets into ``text``
    (``text[start:end] == value``), non-overlapping. Bad slots raise ManifestError.
    """
    if "text" not in item:
        raise ManifestError(f"{_where(item)}: no 'text' field")
    text, slots = item["text"], item.get("slots", [])
    if not isinstance(slots, list):
        raise ManifestError(f"{_where(item)}: 'slots' must be a list, got {type(slots).__name__}")
    spans = []
    for k, slot in enumerate(slots):
        try:
            start, end, typ, value = slot["start"], slot["end"], slot["type"], slot["value"]
        except (KeyError, TypeError):
            raise ManifestError(f"{_where(item)}: slot {k} needs start, end, type and value, "
                                f"got {slot!r}") from None
        ok = (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)
              and isinstance(typ, str) and typ and not any(c.isspace() for c in typ))
        if not ok or text[start:end] != value or not value.strip():
            raise ManifestError(f"{_where(item)}: slot {k} {slot!r} does not match the text "
                                f"{text!r}")
        spans.append((start, end, typ))
    spans.sort()
    for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise ManifestError(f"{_where(item)}: slots overlap in {text!r}")
    pieces, pos = [], 0
    for start, end, typ in spans:
        pieces += [text[pos:start].lower(), f" B-{typ} ", text[start:end].lower(), f" E-{typ} "]
        pos = end
    pieces.append(text[pos:].lower())
    return " ".join("".join(pieces).split())


def tagged_tokens(tagged: str) -> list[str]:
    """CTC targets of a tagged transcript: characters of the words (single spaces between
    words) and each tag as one token. "a B-x b E-x" -> [a, ' ', B-x, ' ', b, ' ', E-x]."""
    tokens: list[str] = []
    for word in tagged.split():
        if tokens:
            tokens.append(" ")
        tokens.extend([word] if is_tag(word) else list(word))
    return tokens


def join_tokens(tokens: list[str]) -> str:
    """Inverse of ``tagged_tokens`` for decoded output: tags become separate words even when
    the model emits them without the surrounding spaces."""
    return " ".join("".join(f" {t} " if is_tag(t) else t for t in tokens).split())


def strip_tags(tagged: str) -> str:
    """The plain words of a tagged transcript."""
    return " ".join(w for w in tagged.split() if not is_tag(w))


def parse_slots(tagged: str) -> list[tuple[str, str]]:
    """(type, value) slots of a tagged transcript, left to right: a ``B-t`` opens a slot that
    the first later ``E-t`` closes; tags of other types inside are dropped from the value; a
    ``B-t`` never closed, or closed around nothing, yields no slot (s3prl's parsing)."""
    words = tagged.split()
    slots, i = [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("B-") and is_tag(word):
            close = "E-" + word[2:]
            end = next((j for j in range(i + 1, len(words)) if words[j] == close), None)
            if end is not None and end > i + 1:
                slots.append((word[2:], strip_tags(" ".join(words[i + 1:end]))))
                i = end + 1
                continue
        i += 1
    return slots


@register_task("sf")
class SlotFilling(CTCTask):
    """Character CTC with slot tags as extra tokens, the ASR BiLSTM probe, greedy decoding."""

    subset = "sf"
    metric = "slot_type_f1"
    higher_is_better = True

    def __init__(self, hidden_size: int = 256, num_layers: int = 2, proj_dim: int = 256,
                 dropout: float = 0.2, downsample: int = 1, specaugment: bool = False):
        self.probe_options = dict(hidden_size=hidden_size, num_layers=num_layers,
                                  proj_dim=proj_dim, dropout=dropout, downsample=downsample,
                                  specaugment=bool(specaugment))

    def tokens(self, item: dict) -> list[str]:
        return tagged_tokens(tag_text(item))

    def join(self, tokens: list[str]) -> str:
        return join_tokens(tokens)

    def build_probe(self, feature_dim: int):
        return BiLSTMCTC(feature_dim, len(self.vocab), **self.probe_options)

    def score(self, predictions, references) -> dict[str, float]:
        """predictions, references: B tagged transcripts."""
        ref_slots = [parse_slots(r) for r in references]
        hyp_slots = [parse_slots(h) for h in predictions]
        out = {"slot_type_f1": metrics.slot_type_f1(ref_slots, hyp_slots)}
        if any(ref_slots):
            out["slot_value_cer"] = metrics.slot_value_cer(ref_slots, hyp_slots)
        words_ref = [strip_tags(r) for r in references]
        words_hyp = [strip_tags(h) for h in predictions]
        out["wer"] = metrics.wer(words_ref, words_hyp)
        out["cer"] = metrics.cer(words_ref, words_hyp)
        return out
