"""The result store: one row per finished run, readable back, rendered as a table; concurrent
writers lose nothing; an older store is migrated; a broken store is named."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from speechssl import report, store
from speechssl.errors import ConfigError


def _row(upstream, task, value, run_id):
    return {"run_id": run_id, "upstream": upstream, "weights_hash": "abc", "task": task,
            "corpus": "synth-tiny-seed0", "metric": "accuracy", "higher_is_better": 1,
            "dev_value": value, "test_value": value, "seed": 0, "wall_time_s": 1.0}


def test_record_rows_and_table(tmp_path):
    db = tmp_path / "lb.sqlite"
    store.record(db, _row("fbank", "ks", 50.0, "r1"))
    store.record(db, _row("apc", "ks", 70.0, "r2"))
    store.record(db, _row("apc", "ks", 75.0, "r2"))  # same run re-recorded: replaced
    rows = store.rows(db)
    assert [(r["upstream"], r["test_value"]) for r in rows] == [("fbank", 50.0), ("apc", 75.0)]
    assert {r["split"] for r in rows} == {"test"}
    table = report.markdown_table(rows)
    assert table.splitlines()[0] == "| upstream | ks (accuracy) | SUPERB score |"
    # synth corpus: baseline = measured fbank (50), topline 100: apc 1000 * 25 / 50 = 500
    assert "| apc | 75.00 | 500 (1/10 tasks) |" in table
    assert "| fbank | 50.00 | 0 (1/10 tasks) |" in table
    assert "test accuracy 75.00" in store.format_row(rows[1])


def test_unknown_column_is_refused_and_nothing_written(tmp_path):
    db = tmp_path / "lb.sqlite"
    with pytest.raises(ValueError, match="unknown leaderboard columns"):
        store.record(db, {**_row("fbank", "ks", 1.0, "r"), "colour": "red"})
    assert store.rows(db) == []


def _writer(db: str, worker: int, n: int) -> None:
    for i in range(n):
        store.record(db, _row(f"up{worker}", "ks", float(i), f"w{worker}-r{i}"))


def test_eight_concurrent_writers_lose_no_row(tmp_path):
    db = str(tmp_path / "lb.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, 15)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    ids = [r["run_id"] for r in store.rows(db)]
    assert len(ids) == 8 * 15 and set(ids) == {f"w{w}-r{i}" for w in range(8) for i in range(15)}


def test_old_store_is_migrated_in_place(tmp_path):
    db = tmp_path / "old.sqlite"
    old_cols = {k: v for k, v in store.COLUMNS.items() if k not in ("split", "run_dir")}
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE runs ({', '.join(f'{k} {v}' for k, v in old_cols.items())})")
    conn.execute("INSERT INTO runs (run_id, upstream, task, corpus, metric, higher_is_better, "
                 "test_value, timestamp) VALUES ('old', 'fbank', 'ks', 'c', 'accuracy', 1, 40, 1)")
    conn.commit()
    conn.close()
    (old,) = store.rows(db)  # reading migrates: the new columns exist, empty
    assert old["run_id"] == "old" and old["split"] is None and old["run_dir"] is None
    store.record(db, {**_row("apc", "ks", 60.0, "new"), "run_dir": "/x"})
    got = {r["run_id"]: r for r in store.rows(db)}
    assert got["new"]["split"] == "test" and got["new"]["run_dir"] == "/x"
    assert got["old"]["test_value"] == 40


def test_a_file_that_is_no_store_is_named(tmp_path):
    bad = tmp_path / "lb.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"lb\.sqlite: the result store is damaged or not an "
                                          r"SQLite file \(file is not a database\)"):
        store.rows(bad)
    folder = tmp_path / "a_folder.sqlite"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"a_folder\.sqlite"):
        store.record(folder, _row("fbank", "ks", 1.0, "r"))
