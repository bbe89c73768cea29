"""The result store: one SQLite file, one row per finished run (the columns below), written
in one transaction per run and safe for concurrent writers (WAL, one migrator at a time)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from speechssl.errors import ConfigError
from speechssl.score import upstream_label

COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "timestamp": "REAL",
    "upstream": "TEXT",
    "weights_hash": "TEXT",
    "pretrain_corpus": "TEXT",
    "task": "TEXT",
    "corpus": "TEXT",
    "split": "TEXT",  # the split `test_value` was measured on (NULL in old stores: "test")
    "metric": "TEXT",
    "higher_is_better": "INTEGER",
    "dev_value": "REAL",
    "test_value": "REAL",
    "metrics_json": "TEXT",
    "seed": "INTEGER",
    "tuning": "TEXT",
    "trainable_params": "INTEGER",
    "upstream_params": "INTEGER",
    "layer_weights": "TEXT",
    "wall_time_s": "REAL",
    "config_yaml": "TEXT",
    "code_version": "TEXT",
    "run_dir": "TEXT",
}


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(runs)")}


def _connect(path: str | Path) -> sqlite3.Connection:
    """Open (create, or migrate to the current columns) the store at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        if set(COLUMNS) - _columns(conn):  # a new store, or one written by an older version
            conn.execute("BEGIN IMMEDIATE")  # one migrator at a time; re-check under the lock
            cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
            conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
            for name in [k for k in COLUMNS if k not in _columns(conn)]:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {COLUMNS[name]}")
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
        raise ConfigError(f"leaderboard={path}: not a usable SQLite result store ({e})") from None
    return conn


def record(path: str | Path, row: dict) -> None:
    """Insert one finished run in one transaction (all columns or nothing)."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown leaderboard columns: {sorted(unknown)}")
    row = {"timestamp": time.time(), "split": "test", **row}
    names = list(row)
    conn = _connect(path)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(names)}) VALUES "
                         f"({', '.join('?' for _ in names)})", [row[n] for n in names])
    finally:
        conn.close()


def rows(path: str | Path) -> list[dict]:
    """All runs in the store, oldest first ([] when the store does not exist yet)."""
    if not Path(path).exists():
        return []
    conn = _connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY timestamp")]
    finally:
        conn.close()


def format_row(row: dict) -> str:
    """One run as a line: task, upstream, headline metric on dev and test."""
    extra = json.loads(row.get("metrics_json") or "{}").get("test", {})
    others = ", ".join(f"{k}={v:.2f}" for k, v in extra.items() if k != row["metric"])
    return (f"{row['task']} | {upstream_label(row)} ({row['weights_hash']}) | corpus {row['corpus']} | "
            f"seed {row['seed']} | dev {row['metric']} {row['dev_value']:.2f} | "
            f"test {row['metric']} {row['test_value']:.2f}" + (f" ({others})" if others else "")
            + f" | {row['wall_time_s']:.0f} s")
