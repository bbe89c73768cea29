"""The result store: one SQLite file, one row per finished run (the columns below), written
in one transaction per run and safe for concurrent writers (WAL, one migrator at a time).
``check_store`` reads it before any work (speechssl/modes.py): a damaged, foreign or read-only
store is one line naming the file and what to do, never a traceback after training."""

from __future__ import annotations

import json
import os
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
    # 1: the probe stopped improving (speechssl/convergence.py); 0: it was still improving
    # when its budget ran out; NULL: no probe (QbE), or a row from before this column
    "converged": "INTEGER",
    "upstream_params": "INTEGER",
    "layer_weights": "TEXT",
    "wall_time_s": "REAL",
    "timing_json": "TEXT",  # where wall_time_s went: setup, features, probe, scoring (seconds); torch threads
    "config_yaml": "TEXT",
    "code_version": "TEXT",
    "run_dir": "TEXT",
}


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(runs)")}


def _damaged(path: Path, e: sqlite3.Error) -> ConfigError:
    """The one line for a store SQLite cannot use: read-only, or not / no longer a store."""
    if "readonly" in str(e):
        return _read_only(path, path)
    why = " ".join(str(e).split())  # quick_check's findings may span lines
    return ConfigError(f"leaderboard={path}: the result store is damaged or not an SQLite file "
                       f"({why}): restore it from a backup, or move it aside to start a new store")


def _read_only(path: Path, what: Path) -> ConfigError:
    where = ("the result store" if what == path else
             f"its directory {what} (where SQLite keeps the store's WAL files)"
             if what == path.parent else f"{what}, beside the result store,")
    return ConfigError(f"leaderboard={path}: {where} is read-only: make it writable "
                       f"(chmod u+w {what}) or point leaderboard= at another file")


def _writable(path: Path) -> Path | None:
    """The first of the store, its WAL files and its directory that cannot be written (the
    store needs all of them), or None."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists() and not os.access(p, os.W_OK):
            return p
    return None if os.access(path.parent, os.W_OK | os.X_OK) else path.parent


def _read_connection(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing: plain (its last close removes the WAL files) when the
    store is writable, else read-only (``immutable`` when the directory is read-only too)."""
    if _writable(path) is None:
        return sqlite3.connect(path, timeout=60)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:  # WAL files cannot be made: nobody can write it either
        return sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)


def _not_a_directory(path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"leaderboard={path}: a directory, not a result store file: point "
                          "leaderboard= at a file")


def check_store(path: str | Path, write: bool = True) -> None:
    """Before any work: ConfigError (one line naming the file and what to do) if the store at
    ``path`` is a directory, damaged, another program's SQLite file, or (``write``) cannot be
    written. Reads only; a store that does not exist yet is fine (the first row creates it)."""
    path = Path(path)
    _not_a_directory(path)
    if not path.exists():
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"leaderboard={path}: {parent} is a file, not a directory: point "
                              "leaderboard= at a file in a directory")
        if write and not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"leaderboard={path}: the directory {parent} is read-only: make it "
                              "writable or point leaderboard= at another file")
        return
    if not os.access(path, os.R_OK):
        raise ConfigError(f"leaderboard={path}: the result store cannot be read (permission "
                          f"denied): make it readable (chmod u+r {path}) or point leaderboard= "
                          "at another file")
    try:
        conn = _read_connection(path)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                                 "type='table'")}
            bad = [r[0] for r in conn.execute("PRAGMA quick_check(3)") if r[0] != "ok"]
            cols = _columns(conn) if "runs" in tables else set()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise _damaged(path, e) from None
    if bad:
        raise _damaged(path, sqlite3.DatabaseError("; ".join(bad)))
    if tables and "run_id" not in cols:
        raise ConfigError(f"leaderboard={path}: an SQLite file without speechssl's runs table "
                          "(another program's database?): point leaderboard= at another file")
    if write and (blocked := _writable(path)) is not None:
        raise _read_only(path, blocked)


def _connect(path: str | Path) -> sqlite3.Connection:
    """Open (create, or migrate to the current columns) the store at `path`."""
    path = Path(path)
    _not_a_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and (blocked := _writable(path)) is not None:
        raise _read_only(path, blocked)
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
        raise _damaged(path, e) from None
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
    except sqlite3.DatabaseError as e:
        raise _damaged(Path(path), e) from None
    finally:
        conn.close()


def rows(path: str | Path) -> list[dict]:
    """All runs in the store, oldest first ([] when the store does not exist yet). A store
    this process cannot write is read as it is (columns it lacks read None)."""
    path = Path(path)
    if not path.exists():
        return []
    if _writable(path) is None:
        conn = _connect(path)
    else:
        check_store(path, write=False)
        conn = _read_connection(path)
    conn.row_factory = sqlite3.Row
    try:
        if not _columns(conn):  # an empty SQLite file, read-only: no runs yet
            return []
        return [{**dict.fromkeys(COLUMNS), **dict(r)}
                for r in conn.execute("SELECT * FROM runs ORDER BY timestamp")]
    except sqlite3.DatabaseError as e:
        raise _damaged(path, e) from None
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
