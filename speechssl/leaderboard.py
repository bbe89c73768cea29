"""The result store (one SQLite file, one row per finished run) and its tables."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "timestamp": "REAL",
    "upstream": "TEXT",
    "weights_hash": "TEXT",
    "pretrain_corpus": "TEXT",
    "task": "TEXT",
    "corpus": "TEXT",
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


def _connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
    return conn


def record(path: str | Path, row: dict) -> None:
    """Insert one finished run in one transaction (all columns or nothing)."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown leaderboard columns: {sorted(unknown)}")
    row = {"timestamp": time.time(), **row}
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
    return (f"{row['task']} | {row['upstream']} ({row['weights_hash']}) | corpus {row['corpus']} | "
            f"seed {row['seed']} | dev {row['metric']} {row['dev_value']:.2f} | "
            f"test {row['metric']} {row['test_value']:.2f}" + (f" ({others})" if others else "")
            + f" | {row['wall_time_s']:.0f} s")


def markdown_table(records: list[dict], corpus: str | None = None) -> str:
    """Upstream x task table of the newest test value per cell (markdown)."""
    cells: dict[tuple[str, str], dict] = {}
    for r in records:
        if corpus is None or r["corpus"] == corpus:
            cells[(r["upstream"], r["task"])] = r
    if not cells:
        return "(no results yet)"
    upstreams = sorted({u for u, _ in cells})
    tasks = sorted({t for _, t in cells})
    metric = {t: next(r["metric"] for (u, tt), r in cells.items() if tt == t) for t in tasks}
    head = "| upstream | " + " | ".join(f"{t} ({metric[t]})" for t in tasks) + " |"
    sep = "|---|" + "---|" * len(tasks)
    lines = [head, sep]
    for u in upstreams:
        vals = [f"{cells[(u, t)]['test_value']:.2f}" if (u, t) in cells else "" for t in tasks]
        lines.append(f"| {u} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
