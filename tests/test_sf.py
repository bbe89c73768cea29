"""SF: slot tags in the CTC target, parsing them back, the SUPERB SF scores, and the task
end to end on the tiny corpus."""

from __future__ import annotations

import json

import pytest

import downstream.sf  # noqa: F401  (registers "sf" even before downstream/__init__ lists it)
from downstream.base import build_task
from downstream.sf import join_tokens, parse_slots, strip_tags, tag_text, tagged_tokens
from speechssl.errors import ManifestError
from speechssl.train import train_cell

ITEM = {"text": "please add something from Victor Hale to my morning coffee playlist",
        "slots": [{"end": 58, "start": 44, "type": "playlist", "value": "morning coffee"},
                  {"end": 37, "start": 26, "type": "artist", "value": "Victor Hale"}],
        "_manifest": "sf.jsonl", "_line": 4}
TAGGED = ("please add something from B-artist victor hale E-artist to my "
          "B-playlist morning coffee E-playlist playlist")


def test_tag_text_wraps_slot_values_in_order():
    assert tag_text(ITEM) == TAGGED
    assert tag_text({"text": "hello  world"}) == "hello world"


def test_tokens_are_characters_plus_whole_tags_and_join_inverts():
    tokens = tagged_tokens("on B-date monday E-date")
    assert tokens == ["o", "n", " ", "B-date", " ", "m", "o", "n", "d", "a", "y", " ", "E-date"]
    assert join_tokens(tokens) == "on B-date monday E-date"
    # decoded output often has no blank-space token around a tag
    assert join_tokens(["o", "n", "B-date", "m", "o", "n", "E-date", "!"]) == \
        "on B-date mon E-date !"


@pytest.mark.parametrize("tagged,slots", [
    (TAGGED, [("artist", "victor hale"), ("playlist", "morning coffee")]),
    ("no slots here", []),
    ("B-city paris", []),  # never closed
    ("B-city E-city rome", []),  # closed around nothing
    ("B-city new B-date york E-city", [("city", "new york")]),  # foreign tag dropped
    ("B-city a E-date b E-city c B-time d E-time", [("city", "a b"), ("time", "d")]),
    ("B-city B-date monday E-date", [("date", "monday")]),  # unclosed first B skipped
])
def test_parse_slots(tagged, slots):
    assert parse_slots(tagged) == slots
    assert "B-" not in strip_tags(tagged) and "E-" not in strip_tags(tagged)


def test_corpus_slots_round_trip(tiny_corpus):
    for item in tiny_corpus.items("sf", "train"):
        tagged = tag_text(item)
        assert parse_slots(tagged) == [(s["type"], s["value"])
                                       for s in sorted(item["slots"], key=lambda s: s["start"])]
        assert strip_tags(tagged) == " ".join(item["text"].split())


@pytest.mark.parametrize("slots,match", [
    ([{"start": 0, "end": 5, "type": "x", "value": "hello"}], "does not match"),
    ([{"start": 6, "end": 99, "type": "x", "value": "world"}], "does not match"),
    ([{"start": 6, "end": 11, "type": "a b", "value": "world"}], "does not match"),
    ([{"start": 6, "end": 11, "type": "x"}], "needs start, end, type and value"),
    ([{"start": 4, "end": 9, "type": "x", "value": "y wor"},
      {"start": 6, "end": 11, "type": "y", "value": "world"}], "overlap"),
    ("city", "must be a list"),
])
def test_bad_slots_name_the_manifest_line(slots, match):
    with pytest.raises(ManifestError, match=rf"sf.jsonl:9: .*{match}"):
        tag_text({"text": "hi my world", "slots": slots, "_manifest": "sf.jsonl", "_line": 9})


def test_sf_score_hand_worked():
    task = build_task("sf")
    refs = ["wake me at B-time noon E-time on B-date monday E-date",
            "play B-genre jazz E-genre"]
    hyps = ["wake me at B-time noon E-time on monday",  # date slot missed: F1 2/3
            "play B-genre jaz E-genre"]  # type right, value 1 deletion
    scores = task.score(hyps, refs)
    assert scores["slot_type_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["slot_value_cer"] == pytest.approx(100 * (0 + 6 + 1) / (4 + 6 + 4))
    assert scores["wer"] == pytest.approx(100 * 1 / 8)  # jazz -> jaz
    assert scores["cer"] == pytest.approx(100 * 1 / (25 + 9))


def test_sf_cell(make_cfg):
    row = train_cell(make_cfg("upstream=fbank", "downstream=sf", "downstream.optim.max_steps=20",
                              "downstream.hidden_size=32", "downstream.proj_dim=32",
                              "downstream.optim.eval_every=20"))
    assert row["task"] == "sf" and row["metric"] == "slot_type_f1" and row["higher_is_better"] == 1
    assert 0.0 <= row["test_value"] <= 100.0
    test = json.loads(row["metrics_json"])["test"]
    assert set(test) == {"slot_type_f1", "slot_value_cer", "wer", "cer"}
