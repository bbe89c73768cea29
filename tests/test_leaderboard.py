"""The result store: one row per finished run, readable back, rendered as a table."""

from __future__ import annotations

import pytest

from speechssl import leaderboard


def _row(upstream, task, value, run_id):
    return {"run_id": run_id, "upstream": upstream, "weights_hash": "abc", "task": task,
            "corpus": "synth-tiny-seed0", "metric": "accuracy", "higher_is_better": 1,
            "dev_value": value, "test_value": value, "seed": 0, "wall_time_s": 1.0}


def test_record_rows_and_table(tmp_path):
    db = tmp_path / "lb.sqlite"
    leaderboard.record(db, _row("fbank", "ks", 50.0, "r1"))
    leaderboard.record(db, _row("apc", "ks", 70.0, "r2"))
    leaderboard.record(db, _row("apc", "ks", 75.0, "r2"))  # same run re-recorded: replaced
    rows = leaderboard.rows(db)
    assert [(r["upstream"], r["test_value"]) for r in rows] == [("fbank", 50.0), ("apc", 75.0)]
    table = leaderboard.markdown_table(rows)
    assert table.splitlines()[0] == "| upstream | ks (accuracy) |"
    assert "| apc | 75.00 |" in table and "| fbank | 50.00 |" in table
    assert "test accuracy 75.00" in leaderboard.format_row(rows[1])


def test_unknown_column_is_refused_and_nothing_written(tmp_path):
    db = tmp_path / "lb.sqlite"
    with pytest.raises(ValueError, match="unknown leaderboard columns"):
        leaderboard.record(db, {**_row("fbank", "ks", 1.0, "r"), "colour": "red"})
    assert leaderboard.rows(db) == []
