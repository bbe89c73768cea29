"""The text half of the embedded corpus: sentiment, part-of-speech, NLI and extractive QA
sets plus sentence pairs for pre-training, drawn from the speech grammar's vocabulary.
Task formats follow GLUE/SQuAD (Wang et al., 2019; Rajpurkar et al., 2016); BERT pre-training
pairs follow Devlin et al., 2019.

Every set is built so that a bag-of-words model is clearly below ceiling: sentiment is
flipped by negation and decided by the clause after "but"/"although"; NLI labels depend on
polarity and on which side carries extra modifiers (downward monotonicity under "not");
present-tense verbs agree with a head noun separated by a prepositional phrase; QA passages
repeat verbs and nouns across facts so the answer is one of several same-typed spans.

On disk (next to the speech corpus, which is never touched)::

    <root>/synth-<size>-seed<seed>-text/
        meta.json
        manifests/text-{sst2,pos,nli,qa}/{train,dev,test}.jsonl
        manifests/text-pretrain/{train,dev}.jsonl

Items (one JSON object a line; ``id`` always, no audio):
    text-sst2:     text, label ("positive" | "negative")
    text-pos:      words, tags (UPOS), text (the words joined by spaces)
    text-nli:      text (premise), text_pair (hypothesis), label (entailment|neutral|contradiction)
    text-qa:       text (question), text_pair (passage), answers [{"text", "start"}] (char offsets
                   into the passage)
    text-pretrain: text, text_pair (two consecutive sentences of one short story)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from speechssl.atomic import atomic_write_text

from . import grammar as G

TEXT_FORMAT_VERSION = 1
TASKS = ("sst2", "pos", "nli", "qa")
TASK_CODES = {"sst2": 101, "pos": 102, "nli": 103, "qa": 104, "pretrain": 105}
SPLIT_CODES = {"train": 0, "dev": 1, "test": 2}
# items per split: (train, dev, test); pretrain: (train, dev)
TEXT_SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "tiny": {"sst2": (300, 80, 80), "pos": (200, 60, 60), "nli": (300, 80, 80),
             "qa": (200, 60, 60), "pretrain": (1500, 100)},
    "default": {"sst2": (6000, 600, 600), "pos": (3000, 400, 400), "nli": (9000, 900, 900),
                "qa": (5000, 500, 500), "pretrain": (40000, 1000)},
    "large": {"sst2": (20000, 1000, 1000), "pos": (10000, 1000, 1000), "nli": (30000, 2000, 2000),
              "qa": (20000, 1000, 1000), "pretrain": (200000, 2000)},
}
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "VERB")
NLI_LABELS = ("entailment", "neutral", "contradiction")
SENTIMENT_LABELS = ("negative", "positive")

GOOD = ["good", "great", "wonderful", "excellent", "lovely", "delicious", "pleasant", "amazing",
        "fantastic", "brilliant", "charming", "superb"]
BAD = ["bad", "terrible", "awful", "boring", "horrible", "disappointing", "dreadful", "poor",
       "nasty", "dull", "annoying", "useless"]
LIKE = [("love", "loved", "loves"), ("enjoy", "enjoyed", "enjoys"), ("like", "liked", "likes"),
        ("admire", "admired", "admires"), ("praise", "praised", "praises")]
HATE = [("hate", "hated", "hates"), ("dislike", "disliked", "dislikes"),
        ("detest", "detested", "detests"), ("regret", "regretted", "regrets"),
        ("despise", "despised", "despises")]
NEUTRAL_ADJ = [a for a in G.ADJECTIVES if a not in GOOD + BAD]
PLURAL_DETS = ["the", "some", "these", "those", "many", "my", "our"]
SINGULAR_DETS = ["the", "a", "my", "this", "that", "her", "his", "our"]

Tagged = list[tuple[str, str]]


def _c(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _p(rng: np.random.Generator, prob: float) -> bool:
    return bool(rng.random() < prob)


def words_of(tagged: Tagged) -> str:
    return " ".join(w for w, _ in tagged)


# ---------------------------------------------------------------------------
# noun phrases and clauses, tagged with UPOS
# ---------------------------------------------------------------------------

def noun_phrase(det: str, adj: str | None, noun: str) -> Tagged:
    """(det, adjective or None, noun) -> tagged words, with a/an agreement."""
    first = adj or noun
    if det in ("a", "an"):
        det = "an" if first[0] in "aeiou" else "a"
    tag = "NUM" if det in G.ONES + G.TENS else "DET"
    out = [(w, tag) for w in det.split()]
    if adj:
        out.append((adj, "ADJ"))
    return out + [(noun, "NOUN")]


def random_np(rng, pool, plural: bool | None = None, adj_prob: float = 0.4,
              adjectives=NEUTRAL_ADJ) -> tuple[tuple[str, str | None, str], bool]:
    """A noun phrase spec (det, adj, noun) from ``pool`` of (singular, plural) nouns."""
    plural = _p(rng, 0.3) if plural is None else plural
    sing, plur = _c(rng, pool)
    det = _c(rng, PLURAL_DETS) if plural else _c(rng, SINGULAR_DETS)
    if plural and _p(rng, 0.2):
        det = G.ONES[int(rng.integers(2, 13))]
    adj = _c(rng, adjectives) if _p(rng, adj_prob) else None
    return (det, adj, plur if plural else sing), plural


def subject(rng, allow_pp: bool = True) -> tuple[Tagged, str, str]:
    """(tagged subject, person, head word). Person is "3s", "3p" or a pronoun; a common-noun
    subject may carry a prepositional phrase with a noun of the other number (agreement
    attractor: "the teacher near the dogs sleeps")."""
    r = rng.random()
    if r < 0.3:
        name = _c(rng, G.NAMES)
        return [(name, "PROPN")], "3s", name
    if r < 0.45:
        pro = _c(rng, ["i", "you", "we", "they", "he", "she"])
        return [(pro, "PRON")], ("3s" if pro in ("he", "she") else pro), pro
    spec, plural = random_np(rng, G.AGENTS)
    tagged = noun_phrase(*spec)
    if allow_pp and _p(rng, 0.35):
        prep = _c(rng, ["near", "behind", "with", "beside"])
        other, _ = random_np(rng, G.AGENTS + G.THINGS, plural=not plural, adj_prob=0.2)
        tagged += [(prep, "ADP")] + noun_phrase(*other)
    return tagged, ("3p" if plural else "3s"), spec[2]


def third_singular(person: str) -> bool:
    return person in ("3s", "he", "she")


def verb_group(verb: tuple[str, ...], person: str, tense: str, negated: bool) -> Tagged:
    """Verb forms (base, past, -ing, 3rd) -> tagged verb group with do-support for negation."""
    base, past, third = verb[0], verb[1], verb[-1]
    if tense == "future":
        return [("will", "AUX")] + ([("not", "PART")] if negated else []) + [(base, "VERB")]
    if negated:
        aux = "did" if tense == "past" else ("does" if third_singular(person) else "do")
        return [(aux, "AUX"), ("not", "PART"), (base, "VERB")]
    if tense == "past":
        return [(past, "VERB")]
    return [(third if third_singular(person) else base, "VERB")]


def be_form(person: str, tense: str, plural: bool = False) -> str:
    if tense == "past":
        return "were" if plural or person in ("3p", "we", "they", "you") else "was"
    if person == "i":
        return "am"
    return "are" if plural or person in ("3p", "we", "they", "you") else "is"


def place_phrase(rng) -> Tagged:
    prep = _c(rng, ["in", "near", "behind", "at", "outside"])
    return [(prep, "ADP"), ("the", "DET"), (_c(rng, G.PLACES), "NOUN")]


def time_phrase(rng) -> Tagged:
    word = _c(rng, ["yesterday", "today", "tomorrow", "later", "again", "early"])
    return [(word, "ADV")]


# ---------------------------------------------------------------------------
# text-pos: tagged sentences of several shapes
# ---------------------------------------------------------------------------

def pos_sentence(rng) -> Tagged:
    """One tagged sentence: declarative (tense, negation), copular, intransitive with a
    subordinate clause, or a yes/no question."""
    subj, person, _ = subject(rng)
    kind = int(rng.integers(4))
    tense = _c(rng, ["past", "present", "future"])
    if kind == 0:
        obj, _ = random_np(rng, G.THINGS + G.AGENTS)
        out = subj + verb_group(_c(rng, G.VERBS), person, tense, _p(rng, 0.3)) + noun_phrase(*obj)
        if _p(rng, 0.5):
            out += place_phrase(rng)
    elif kind == 1:
        out = subj + [(be_form(person, "past" if tense == "past" else "present"), "AUX")]
        if _p(rng, 0.3):
            out.append(("not", "PART"))
        if _p(rng, 0.3):
            out.append((_c(rng, ["very", "quite", "really"]), "ADV"))
        out.append((_c(rng, G.ADJECTIVES), "ADJ"))
    elif kind == 2:
        out = subj + verb_group(_c(rng, G.IVERBS), person, tense, False)
        if _p(rng, 0.4):
            out.append((_c(rng, G.ADVERBS), "ADV"))
        out += [(_c(rng, ["because", "while", "after", "before"]), "SCONJ")]
        subj2, person2, _ = subject(rng, allow_pp=False)
        obj, _ = random_np(rng, G.THINGS)
        out += subj2 + verb_group(_c(rng, G.VERBS), person2, "past", False) + noun_phrase(*obj)
    else:
        obj, _ = random_np(rng, G.THINGS)
        out = [("did", "AUX")] + subj + [(_c(rng, G.VERBS)[0], "VERB")] + noun_phrase(*obj)
        if _p(rng, 0.5):
            out += place_phrase(rng)
    if _p(rng, 0.3):
        out += time_phrase(rng)
    return out


# ---------------------------------------------------------------------------
# text-sst2: polarity under negation and contrast
# ---------------------------------------------------------------------------

def sentiment_clause(rng, positive: bool) -> str:
    """One clause whose sentiment is ``positive``: a polar adjective or verb, negated half of
    the time (so the polar word alone says nothing)."""
    negated = _p(rng, 0.5)
    word_positive = positive != negated
    if _p(rng, 0.5):  # "<np> was (not) (very) <adj>"
        spec, plural = random_np(rng, G.THINGS + G.AGENTS, adj_prob=0.3)
        tense = _c(rng, ["past", "present"])
        words = [words_of(noun_phrase(*spec)), be_form("3s", tense, plural)]
        if negated:
            words.append("not")
        if _p(rng, 0.3):
            words.append(_c(rng, ["very", "really", "quite"]))
        words.append(_c(rng, GOOD if word_positive else BAD))
        return " ".join(words)
    subj, person, _ = subject(rng, allow_pp=False)
    verb = _c(rng, LIKE if word_positive else HATE)
    spec, _ = random_np(rng, G.THINGS + G.AGENTS, adj_prob=0.3)
    group = verb_group(verb, person, _c(rng, ["past", "present"]), negated)
    return " ".join([words_of(subj), words_of(group), words_of(noun_phrase(*spec))])


def sentiment_item(rng) -> dict:
    positive = _p(rng, 0.5)
    main = sentiment_clause(rng, positive)
    if _p(rng, 0.5):
        text = main
    else:  # the clause after "but" / the main clause of "although" decides
        other = sentiment_clause(rng, not positive if _p(rng, 0.8) else positive)
        form = int(rng.integers(3))
        text = (f"{other} but {main}" if form == 0 else f"although {other} {main}" if form == 1
                else f"{main} even though {other}")
    return {"text": text, "label": SENTIMENT_LABELS[int(positive)]}


# ---------------------------------------------------------------------------
# text-nli: monotonicity under negation
# ---------------------------------------------------------------------------

def _fact(rng) -> dict:
    """A simple past event with optional modifiers: subject, verb, object, place."""
    if _p(rng, 0.5):
        subj = (None, None, _c(rng, G.NAMES))
    else:
        subj = random_np(rng, G.AGENTS, plural=False, adj_prob=0.0)[0]
        subj = ("the", None, subj[2])
    obj_noun = _c(rng, G.THINGS)[0]
    return {"subj": subj, "verb": _c(rng, G.VERBS), "obj": ("the", None, obj_noun),
            "adj": _c(rng, NEUTRAL_ADJ), "place": _c(rng, G.PLACES),
            "subj_adj": _c(rng, NEUTRAL_ADJ)}


def render_fact(f: dict, negated: bool, mods: frozenset) -> str:
    """mods: which of {"adj", "place", "subj_adj"} the sentence carries."""
    det, _, noun = f["subj"]
    subj = noun if det is None else words_of(noun_phrase(
        det, f["subj_adj"] if "subj_adj" in mods else None, noun))
    obj = words_of(noun_phrase("the", f["adj"] if "adj" in mods else None, f["obj"][2]))
    out = [subj, words_of(verb_group(f["verb"], "3s", "past", negated)), obj]
    if "place" in mods:
        out.append(f"in the {f['place']}")
    return " ".join(out)


def nli_item(rng) -> dict:
    """Positive premise: fewer modifiers in the hypothesis = entailment, more = neutral.
    Negated premise: the reverse (downward monotone). Flipped polarity = contradiction."""
    f = _fact(rng)
    allowed = ["adj", "place"] + (["subj_adj"] if f["subj"][0] is not None else [])
    label = _c(rng, NLI_LABELS)
    negated = _p(rng, 0.5)
    some = [m for m in allowed if _p(rng, 0.5)] or [_c(rng, allowed)]
    big, small = frozenset(some), frozenset(m for m in some if _p(rng, 0.4))
    if label == "contradiction":
        prem, hyp, hyp_neg = (big, big, False) if negated else (big, small, True)
    elif label == "entailment":
        prem, hyp, hyp_neg = (small, big, True) if negated else (big, small, False)
    else:  # neutral: more specific than a positive premise, less than a negated one
        if _p(rng, 0.25):  # or about someone else
            other = dict(f, subj=(None, None, _c(rng, [n for n in G.NAMES if n != f["subj"][2]])))
            return {"text": render_fact(f, negated, big), "text_pair": render_fact(other, negated,
                                                                                   small),
                    "label": label}
        prem, hyp, hyp_neg = (big, small, True) if negated else (small, big, False)
    return {"text": render_fact(f, negated, prem), "text_pair": render_fact(f, hyp_neg, hyp),
            "label": label}


# ---------------------------------------------------------------------------
# text-qa: passages of facts with distractor spans
# ---------------------------------------------------------------------------

def qa_item(rng) -> dict:
    """3-5 facts sharing verbs and nouns; a who/what/where question about one of them."""
    n = int(rng.integers(3, 6))
    verbs = [_c(rng, G.VERBS) for _ in range(2)]
    nouns = [_c(rng, G.THINGS)[0] for _ in range(2)]
    names = list(rng.permutation(G.NAMES)[:n])
    facts, seen = [], set()
    while len(facts) < n:
        verb, noun, adj = _c(rng, verbs), _c(rng, nouns), _c(rng, NEUTRAL_ADJ)
        if (verb[0], noun, adj) in seen:
            continue
        seen.add((verb[0], noun, adj))
        det = _c(rng, ["a", "the", "my", "her", "his"])
        facts.append({"who": str(names[len(facts)]), "verb": verb, "what": words_of(
            noun_phrase(det, adj, noun)), "adj": adj, "noun": noun,
            "where": f"{_c(rng, ['in', 'near', 'behind', 'at'])} the {_c(rng, G.PLACES)}"})
    passage, starts = "", []
    for f in facts:
        starts.append(len(passage))
        passage += f"{f['who']} {f['verb'][1]} {f['what']} {f['where']} . "
    passage = passage.strip()
    k = int(rng.integers(n))
    f, start = facts[k], starts[k]
    kind = int(rng.integers(3))
    if kind == 0:
        question = f"who {f['verb'][1]} the {f['adj']} {f['noun']} ?"
        answer, offset = f["who"], 0
    elif kind == 1:
        question = f"what did {f['who']} {f['verb'][0]} ?"
        if sum(g["who"] == f["who"] for g in facts) > 1:  # pragma: no cover - names are unique
            raise AssertionError("ambiguous question")
        answer, offset = f["what"], len(f"{f['who']} {f['verb'][1]} ")
    else:
        question = f"where did {f['who']} {f['verb'][0]} the {f['noun']} ?"
        answer = f["where"]
        offset = len(f"{f['who']} {f['verb'][1]} {f['what']} ")
    assert passage[start + offset: start + offset + len(answer)] == answer
    return {"text": question, "text_pair": passage,
            "answers": [{"text": answer, "start": start + offset}]}


# ---------------------------------------------------------------------------
# text-pretrain: sentence pairs of a short story (for MLM + SOP/NSP)
# ---------------------------------------------------------------------------

def pretrain_item(rng) -> dict:
    """Two consecutive sentences; the second continues the first's subject."""
    kind = int(rng.integers(4))
    if kind == 0:
        first = words_of(pos_sentence(rng))
    elif kind == 1:
        first = sentiment_item(rng)["text"]
    elif kind == 2:
        first = G.sentence(rng)
    else:
        first = qa_item(rng)["text_pair"].split(" . ")[0]
    subj, person, _ = subject(rng)
    verb = _c(rng, G.VERBS)
    obj, _ = random_np(rng, G.THINGS)
    lead = _c(rng, ["then", "after that", "later", "so", "and then"])
    second = " ".join([lead, words_of(subj), words_of(verb_group(verb, person, "past", _p(rng, 0.2))),
                       words_of(noun_phrase(*obj))])
    return {"text": first, "text_pair": second}


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def _rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, TASK_CODES[task], SPLIT_CODES[split], index])


def make_item(task: str, seed: int, split: str, index: int) -> dict:
    """One item of ``task`` (sst2, pos, nli, qa, pretrain), a pure function of its coordinates."""
    rng = _rng(seed, task, split, index)
    if task == "pos":
        tagged = pos_sentence(rng)
        item = {"words": [w for w, _ in tagged], "tags": [t for _, t in tagged],
                "text": words_of(tagged)}
    else:
        item = {"sst2": sentiment_item, "nli": nli_item, "qa": qa_item,
                "pretrain": pretrain_item}[task](rng)
    return {"id": f"text-{task}-{split}-{index:06d}", **item}


def plan_text(size: str, seed: int) -> dict[str, dict[str, list[dict]]]:
    """{subset: {split: items}} of the whole text corpus."""
    if size not in TEXT_SIZES:
        raise ValueError(f"unknown corpus size {size!r}; valid sizes: {', '.join(TEXT_SIZES)}")
    out: dict[str, dict[str, list[dict]]] = {}
    for task, counts in TEXT_SIZES[size].items():
        splits = ("train", "dev") if task == "pretrain" else ("train", "dev", "test")
        out[f"text-{task}"] = {split: [make_item(task, seed, split, i) for i in range(n)]
                               for split, n in zip(splits, counts, strict=True)}
    return out


def text_dir_name(size: str, seed: int) -> str:
    return f"synth-{size}-seed{int(seed)}-text"


def _write(out: Path, size: str, seed: int) -> None:
    manifests = plan_text(size, seed)
    for subset, splits in manifests.items():
        for split, items in splits.items():
            lines = "".join(json.dumps(it, sort_keys=True) + "\n" for it in items)
            atomic_write_text(out / "manifests" / subset / f"{split}.jsonl", lines)
    meta = {"format_version": TEXT_FORMAT_VERSION, "size": size, "seed": seed, "modality": "text",
            "subsets": sorted(manifests), "upos": list(UPOS), "nli_labels": list(NLI_LABELS),
            "sentiment_labels": list(SENTIMENT_LABELS),
            "counts": {s: {sp: len(v) for sp, v in d.items()} for s, d in manifests.items()}}
    atomic_write_text(out / "meta.json", json.dumps(meta, sort_keys=True, indent=1) + "\n")


def ensure_text_corpus(root: str | os.PathLike, size: str, seed: int) -> Path:
    """``<root>/synth-<size>-seed<seed>-text``, generated first if missing (seconds).

    Idempotent and safe for concurrent callers (a lock file, a staging directory renamed
    into place when complete). The speech corpus beside it is never read or changed.
    """
    root, seed = Path(root), int(seed)
    final = root / text_dir_name(size, seed)
    if (final / "meta.json").is_file():
        return final
    from speechssl.lock import locked

    with locked(final):  # concurrent callers: one writes, the others then find it
        if (final / "meta.json").is_file():
            return final
        staging = root / f"{final.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        try:
            _write(staging, size, seed)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final
