"""QUESST 2014 (MediaEval 2014 Query by Example Search on Speech, Anguera et al. 2014) for QbE,
read in its published layout (``quesst14Database.tgz``) as SUPERB does: the search documents
of ``Audio/``, dev queries for layer selection, eval queries for test, non-native English.

Layout (``corpus.root`` is the ``quesst14Database`` directory; its parent is accepted too)::

    Audio/quesst14_<5 digits>.wav               search documents (8 kHz mono)
    dev_queries/quesst14_dev_<4 digits>.wav     dev queries
    eval_queries/quesst14_eval_<4 digits>.wav   eval queries
    scoring/language_key_utterances.lst         '<path> <language>' per document
    scoring/language_key_dev.lst                '<path> <language>' per dev query
    scoring/language_key_eval.lst               '<path> <language>' per eval query
    scoring/groundtruth_quesst14_dev/quesst14_dev.rttm     ground truth (with .ecf.xml,
    scoring/groundtruth_quesst14_eval/quesst14_eval.rttm   .tlist.xml for the NIST scorer)

List paths start with the archive's top directory (``quesst14Database/Audio/...``), which is
dropped, as s3prl and torchaudio do. Languages: albanian, basque, czech, nnenglish (non-native
English; SUPERB keeps only these lines), romanian, slovak.

Ground truth: the ``.rttm`` file, the reference the official ``score-TWV-Cnxe.sh`` scores
against. Each NIST RTTM line ``LEXEME <document> <channel> <tbeg> <dur> <query id> <stype>
<speaker> <conf>`` says that query ``<query id>`` (the stem of its wav) occurs in document
``<document>`` (``Audio/<document>.wav``) from ``tbeg`` for ``dur`` seconds. LEXEME lines
whose orthography is ``NO_KEYWORD``, ``;;`` comments and the other RTTM types (``SPEAKER``,
``SPKR-INFO``, ...) carry no occurrence and are skipped. The ``.ecf.xml`` (documents in
scope) and ``.tlist.xml`` (query ids) are not read: the language lists give the same sets.
Sources: s3prl ``downstream/quesst14_dtw/dataset.py`` and ``torchaudio.datasets.QUESST14``
(lists, file names, 8 kHz); NIST RTTM field order; public QUESST14 loaders reading
``quesst14_{dev,eval}.rttm`` (document = field 2, query = field 6, ``NO_KEYWORD`` skipped).

Items follow the synthesized QbE contract (``downstream/qbe.py``): a query has ``kind:
query`` and ``term`` = its id; a document has ``kind: doc`` and ``text`` = the ids of the
split's queries occurring in it (``<none>`` when none), so "term in text" is the ground truth;
``occurrences`` keeps the times. Audio stays 8 kHz on disk; ``load_audio`` resamples it to
the upstream's rate (16 kHz) when read, as s3prl does.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_dir,
    check_file,
    option_list,
    read_lines,
    split_ws,
    strip_labels,
)
from speechssl.errors import ConfigError, ManifestError

LANGUAGES = ("albanian", "basque", "czech", "nnenglish", "romanian", "slovak")
AUDIO_DIRS = {"docs": "Audio", "dev": "dev_queries", "test": "eval_queries"}
LISTS = {"docs": "language_key_utterances.lst", "dev": "language_key_dev.lst",
         "test": "language_key_eval.lst"}
GROUNDTRUTH = {"dev": "scoring/groundtruth_quesst14_dev/quesst14_dev.rttm",
               "test": "scoring/groundtruth_quesst14_eval/quesst14_eval.rttm"}
NO_HIT = "<none>"  # the text of a document no query of the split occurs in
NO_KEYWORD = "NO_KEYWORD"
# NIST RTTM object types; only LEXEME lines name query occurrences
RTTM_TYPES = frozenset({"SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX",
                        "NON-SPEECH", "FILLER", "EDIT", "IP", "SU", "CB", "A/P", "SPEAKER",
                        "SPKR-INFO"})


def database_root(root: Path) -> Path:
    """``root`` if it holds ``scoring/``, else ``root/quesst14Database`` when that does."""
    if not (root / "scoring").is_dir() and (root / "quesst14Database" / "scoring").is_dir():
        return root / "quesst14Database"
    return root


def stem(name: str) -> str:
    """``quesst14_00001.wav`` or ``Audio/quesst14_00001`` -> ``quesst14_00001``."""
    base = PurePosixPath(name).name
    return base[:-4] if base.lower().endswith(".wav") else base


def audio_candidates(db: Path, rel: str) -> list[Path]:
    """Where a list path may point: without its first component (``quesst14Database/``),
    then as given, both relative to the database directory."""
    parts = PurePosixPath(rel).parts
    out = [db.joinpath(*parts[1:])] if len(parts) > 1 else []
    return out + [db.joinpath(*parts)]


def find_audio(entry: dict, where: str) -> Path:
    """The existing file of a list entry; ManifestError at ``where`` otherwise."""
    for path in entry["candidates"]:
        if path.is_file():
            return path
    raise ManifestError(f"{where}: audio file not found: {entry['candidates'][0]}")


def read_list(db: Path, name: str) -> dict[str, dict]:
    """``<path>.wav <language>`` lines -> {id (wav stem): {rel, language, candidates, where}}."""
    path = db / "scoring" / name
    entries: dict[str, dict] = {}
    for where, _, line in read_lines(path, f"QUESST14 language list {name}"):
        fields = split_ws(line)
        if len(fields) != 2 or not fields[0].lower().endswith(".wav"):
            raise ManifestError(f"{where}: expected '<dir>/<name>.wav <language>', got {line!r}")
        rel, language = fields
        key = stem(rel)
        if key in entries:
            raise ManifestError(f"{where}: {key!r} is listed twice (first at "
                                f"{entries[key]['where']})")
        entries[key] = {"rel": rel, "language": language, "where": where,
                        "candidates": audio_candidates(db, rel)}
    if not entries:
        raise ManifestError(f"{path}: no lines")
    return entries


def read_groundtruth(path: Path, queries: dict[str, dict], docs: dict[str, dict],
                     lists: tuple[str, str], languages: list[str]) -> dict[str, list[dict]]:
    """The RTTM's LEXEME occurrences -> {document id: [{term, start, end}]}, in file order.

    A query or document of an occurrence must be listed (``lists``: the query and the
    document list names) and, when of a selected language (``languages``; empty = all),
    its audio must exist; errors name ``<rttm>:<line>``."""
    found: dict[str, list[dict]] = {}
    checked: set[tuple[str, str]] = set()
    for where, _, line in read_lines(path, "QUESST14 ground truth (RTTM)"):
        if line.startswith(";;"):
            continue
        fields = split_ws(line)
        if fields[0] not in RTTM_TYPES:
            raise ManifestError(f"{where}: expected an RTTM line '<TYPE> <file> <channel> "
                                f"<tbeg> <dur> <ortho> ...' (TYPE e.g. LEXEME), got {line!r}")
        if fields[0] != "LEXEME":
            continue
        if len(fields) < 6:
            raise ManifestError(f"{where}: expected 'LEXEME <document> <channel> <tbeg> <dur> "
                                f"<query id> ...', got {line!r}")
        if fields[5] == NO_KEYWORD:
            continue
        doc, query = stem(fields[1]), stem(fields[5])
        try:
            start, dur = float(fields[3]), float(fields[4])
        except ValueError:
            raise ManifestError(f"{where}: tbeg/dur must be seconds, got {fields[3]!r} "
                                f"{fields[4]!r}") from None
        if not (math.isfinite(start) and math.isfinite(dur) and start >= 0 and dur >= 0):
            raise ManifestError(f"{where}: expected tbeg >= 0 and dur >= 0, got {start} {dur}")
        for kind, key, table, lst in (("query", query, queries, lists[0]),
                                      ("document", doc, docs, lists[1])):
            if (kind, key) in checked:
                continue
            if key not in table:
                raise ManifestError(f"{where}: {kind} {key!r} has no audio: it is not in "
                                    f"scoring/{lst}")
            used = not languages or table[key]["language"] in languages
            if used and not any(p.is_file() for p in table[key]["candidates"]):
                raise ManifestError(f"{where}: {kind} {key!r} has no audio: "
                                    f"{table[key]['candidates'][0]} not found")
            checked.add((kind, key))
        found.setdefault(doc, []).append({"term": query, "start": round(start, 4),
                                          "end": round(start + dur, 4)})
    return found


def selected(entries: dict[str, dict], languages: list[str]) -> list[tuple[str, dict]]:
    """Entries of the chosen languages (all when ``languages`` is empty), in list order."""
    return [(k, e) for k, e in entries.items() if not languages or e["language"] in languages]


@READERS.register("quesst14")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``qbe`` (dev: dev queries + documents; test: eval queries + documents) and
    ``pretrain`` (train: the documents, dev: the dev queries; audio only)."""
    db = database_root(root)
    check_dir(db / "scoring", "QUESST14 scoring")
    for d in AUDIO_DIRS.values():
        check_dir(db / d, f"QUESST14 {d}")
    languages = option_list(cfg, "languages")
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise ConfigError(f"corpus.languages={languages}: unknown {', '.join(unknown)}; "
                          f"QUESST14 has {', '.join(LANGUAGES)} ([] = all)")
    all_docs = read_list(db, LISTS["docs"])
    listed, found = {}, {}
    for split in ("dev", "test"):  # ground truth first: its errors name the RTTM line
        listed[split] = read_list(db, LISTS[split])
        key = cfg.get(f"{split}_groundtruth") or GROUNDTRUTH[split]
        gt = check_file(db / str(key), f"QUESST14 {split} ground truth (corpus.{split}_"
                                       f"groundtruth)")
        found[split] = (gt, read_groundtruth(gt, listed[split], all_docs,
                                             (LISTS[split], LISTS["docs"]), languages))
    docs = [{"id": k, "path": str(find_audio(e, e["where"]).resolve()), "kind": "doc",
             "language": e["language"]} for k, e in selected(all_docs, languages)]
    if not docs:
        raise ManifestError(f"{db / 'scoring' / LISTS['docs']}: no documents in "
                            f"corpus.languages={languages}")
    add_durations(docs)
    qbe, truth = {}, {}
    for split in ("dev", "test"):
        gt, occurrences = found[split]
        queries = [{"id": k, "path": str(find_audio(e, e["where"]).resolve()), "kind": "query",
                    "term": k, "language": e["language"]}
                   for k, e in selected(listed[split], languages)]
        if not queries:
            raise ManifestError(f"{db / 'scoring' / LISTS[split]}: no queries in "
                                f"corpus.languages={languages}")
        terms = {q["id"] for q in queries}
        if NO_HIT in terms:
            raise ManifestError(f"{db / 'scoring' / LISTS[split]}: a query may not be named "
                                f"{NO_HIT!r}")
        items = list(add_durations(queries))
        hits = 0
        for d in docs:
            occ = [o for o in occurrences.get(d["id"], []) if o["term"] in terms]
            words = sorted({o["term"] for o in occ})
            hits += len(words)
            items.append({**d, "text": " ".join(words) or NO_HIT, "occurrences": occ})
        if not hits:
            raise ManifestError(f"{gt}: none of the {len(queries)} {split} queries occurs in "
                                f"the {len(docs)} documents (corpus.languages={languages})")
        qbe[split], truth[split] = items, str(gt)
    manifests = {"qbe": qbe,
                 "pretrain": {"train": strip_labels(docs),
                              "dev": strip_labels([it for it in qbe["dev"]
                                                   if it["kind"] == "query"])}}
    meta = {"languages": languages or list(LANGUAGES), "ground_truth": truth,
            "database": str(db)}
    return manifests, meta, {}
