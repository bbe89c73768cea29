"""The leaderboard report: the markdown table, CSV, PNG plots and one self-contained HTML
page (images as base64 data URIs) from the result store. SUPERB protocol: Yang et al., 2021."""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from speechssl import plots
from speechssl.score import CellResult, Scores, aggregate, load_suite, reference_for, superb_scores
from speechssl.store import rows

CELL_FIELDS = ["corpus", "upstream", "task", "metric", "higher_is_better", "test_mean",
               "test_std", "n_seeds", "n_folds", "n_variants", "dev_mean", "choice",
               "converged", "task_score", "metrics_json"]
SCORE_FIELDS = ["corpus", "upstream", "superb_score", "n_tasks", "suite_tasks"]


# ---------------------------------------------------------------- the markdown table


NOT_CONVERGED = "†"


def format_value(c: CellResult) -> str:
    """'75.00', '75.00 ± 1.20 (3 seeds)', with the winning variant when several ran:
    '70.00 (best on dev: optim.lr=0.001)'."""
    text = f"{c.test:.2f}"
    if c.n_seeds > 1:
        text += f" ± {c.test_std:.2f} ({c.n_seeds} seeds)"
    if c.n_folds > 1:
        text += f" [{c.n_folds} folds]"
    if c.choice:
        on = "best on dev" if c.selected_on == "dev" else "best on test, no dev score"
        text += f" ({on}: {c.choice})"
    if c.converged is False:
        text += f" {NOT_CONVERGED}"
    return text


def format_score(scores: Scores, upstream: str) -> str:
    if upstream not in scores.upstream:
        return "n/a"
    n, total = scores.n_tasks[upstream], len(scores.suite_tasks)
    return f"{scores.upstream[upstream]:.0f}" + ("" if n == total else f" ({n}/{total} tasks)")


def table_rows(cells: list[CellResult], scores: Scores, corpus: str):
    """(header, rows) of the upstream x task table of one corpus, as strings."""
    mine = [c for c in cells if c.corpus == corpus]
    tasks = sorted({c.task for c in mine})
    by = {(c.upstream, c.task): c for c in mine}
    metric = {t: next(c.metric for c in mine if c.task == t) for t in tasks}
    header = ["upstream", *(f"{t} ({metric[t]})" for t in tasks), "SUPERB score"]
    body = []
    for u in sorted({c.upstream for c in mine}):
        vals = [format_value(by[(u, t)]) if (u, t) in by else "" for t in tasks]
        body.append([u, *vals, format_score(scores, u)])
    return header, body


def table_notes(cells: list[CellResult], scores: Scores, suite: dict, corpus: str) -> list[str]:
    mine = [c for c in cells if c.corpus == corpus]
    direction = {c.task: ("higher" if c.higher_is_better else "lower") for c in mine}
    notes = ["test values; " + ", ".join(f"{t}: {d} is better" for t, d in sorted(direction.items()))]
    ref = reference_for(suite, corpus)
    if ref is not None:
        notes.append(f"SUPERB score (suite {suite.get('name')}): 1000 x (v - baseline) / "
                     f"(topline - baseline), averaged within a task, then over the "
                     f"{len(suite['tasks'])} suite tasks; reference points: "
                     f"{ref.get('provenance', ref['corpus'])}")
    if any(c.converged is False for c in mine):
        notes.append(f"{NOT_CONVERGED} not converged: the probe's dev metric (without a "
                     "dev split, its training loss) was still improving over the last fifth of its training "
                     "(speechssl/convergence.py); a larger downstream.optim.max_steps may "
                     "change the value")
    return notes + scores.notes


def markdown_table(records: list[dict], corpus: str | None = None,
                   suite: dict | None = None) -> str:
    """Upstream x task table per corpus (markdown): the dev-selected test value of each cell,
    mean ± std over seeds, and the SUPERB score column, with notes below."""
    suite = suite if suite is not None else load_suite("superb")
    cells = aggregate([r for r in records if corpus is None or r["corpus"] == corpus])
    if not cells:
        return "(no results yet)"
    corpora = sorted({c.corpus for c in cells})
    parts = []
    for name in corpora:
        scores = superb_scores(cells, suite, name)
        header, body = table_rows(cells, scores, name)
        lines = [] if len(corpora) == 1 else [f"### corpus {name}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---|" * (len(header) - 1))
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines.append("")
        lines += [f"- {n}" for n in table_notes(cells, scores, suite, name)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- CSV, plots, HTML


@dataclass
class Figure:
    title: str
    path: Path
    png: bytes


@dataclass
class CorpusSection:
    corpus: str
    header: list[str]
    body: list[list[str]]
    notes: list[str]
    figures: list[Figure] = field(default_factory=list)  # summary plots, shown open
    curves: list[Figure] = field(default_factory=list)  # per-run curves, folded
    task_scores: list[list[str]] = field(default_factory=list)  # [upstream, task, score]


def slug(text: str) -> str:
    """A file-name-safe version of `text` ('apc/ks/synth-tiny-seed0' -> 'apc_ks_synth-...')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def cell_layer_weights(cell: CellResult) -> list[float] | None:
    """Mean learned layer weights over the runs of a cell's chosen variant (L,), or None."""
    ws = []
    for r in cell.runs:
        try:
            w = json.loads(r.get("layer_weights") or "null")
        except json.JSONDecodeError:
            w = None
        if isinstance(w, list) and w and all(isinstance(x, int | float) for x in w):
            ws.append(w)
    if not ws or len({len(w) for w in ws}) != 1:
        return None
    return [sum(col) / len(ws) for col in zip(*ws, strict=True)]


def write_csvs(cells: list[CellResult], scores: dict[str, Scores], out: Path) -> list[Path]:
    """cells.csv (one row per upstream x task x corpus) and scores.csv (one per upstream)."""
    cells_csv, scores_csv = out / "cells.csv", out / "scores.csv"
    with cells_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CELL_FIELDS)
        w.writeheader()
        for c in cells:
            ts = scores[c.corpus].task.get((c.upstream, c.task))
            w.writerow({"corpus": c.corpus, "upstream": c.upstream, "task": c.task,
                        "metric": c.metric, "higher_is_better": int(c.higher_is_better),
                        "test_mean": c.test, "test_std": c.test_std, "n_seeds": c.n_seeds,
                        "n_folds": c.n_folds, "n_variants": c.n_variants,
                        "dev_mean": "" if c.dev is None else c.dev, "choice": c.choice,
                        "converged": "" if c.converged is None else int(c.converged),
                        "task_score": "" if ts is None else ts,
                        "metrics_json": json.dumps({k: v[0] for k, v in c.metrics.items()})})
    with scores_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SCORE_FIELDS)
        w.writeheader()
        for corpus, s in sorted(scores.items()):
            for u, v in sorted(s.upstream.items()):
                w.writerow({"corpus": corpus, "upstream": u, "superb_score": v,
                            "n_tasks": s.n_tasks[u], "suite_tasks": len(s.suite_tasks)})
    return [cells_csv, scores_csv]


def corpus_figures(cells: list[CellResult], scores: Scores, corpus: str, out: Path,
                   curves: bool = True) -> list[Figure]:
    """Score bars, the layer-weight heat map and per-run curves of one corpus (PNGs)."""
    figs = []
    mine = [c for c in cells if c.corpus == corpus]
    if scores.upstream:
        title = f"SUPERB score per upstream, {corpus}"
        figs.append(Figure(title, out / f"score_{slug(corpus)}.png",
                           plots.score_bars_png(scores.upstream, title)))
    weights = [(f"{c.upstream} / {c.task}", cell_layer_weights(c)) for c in mine]
    weights = [(label, w) for label, w in weights if w is not None]
    if weights:
        title = f"learned layer weights (featurizer), {corpus}"
        figs.append(Figure(title, out / f"layer_weights_{slug(corpus)}.png",
                           plots.layer_weights_png([a for a, _ in weights],
                                                   [w for _, w in weights], title)))
    for c in mine if curves else []:
        for r in c.runs:
            series = plots.read_tb_scalars(Path(r.get("run_dir") or "") / "tb")
            train = series.get("train/loss")
            if not train:
                continue
            dev = {k.split("/", 1)[1]: v for k, v in series.items() if k.startswith("dev/")}
            title = f"{c.upstream} x {c.task}, seed {r.get('seed')} ({r['run_id']})"
            figs.append(Figure(title, out / "curves" / f"{slug(r['run_id'])}.png",
                               plots.curves_png(train, dev, title)))
    return figs


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #999;padding:.3em .6em}
th{background:#eee}td{text-align:right}td:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:90%;color:#444}img{max-width:100%}"""


def _figure_html(f: Figure) -> str:
    e = html.escape
    return (f'<figure><img src="{_data_uri(f.png)}" alt="{e(f.title)}">'
            f"<figcaption>{e(f.title)}</figcaption></figure>")


def render_html(sections: list[CorpusSection], title: str) -> str:
    """One self-contained page: per corpus its table, notes and figures (data URIs)."""
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<link rel="icon" href="data:,">', f"<title>{e(title)}</title>",
           f"<style>{STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for s in sections:
        out.append(f"<h2>corpus {e(s.corpus)}</h2>")
        out.append('<table class="leaderboard"><thead><tr>'
                   + "".join(f"<th>{e(h)}</th>" for h in s.header) + "</tr></thead><tbody>")
        for row in s.body:
            out.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>")
        out.append("</tbody></table><ul>" + "".join(f"<li>{e(n)}</li>" for n in s.notes)
                   + "</ul>")
        if s.task_scores:
            out.append('<details><summary>SUPERB score per task</summary><table class="scores">'
                       "<thead><tr><th>upstream</th><th>task</th><th>score</th></tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row)
                                           + "</tr>" for row in s.task_scores)
                       + "</tbody></table></details>")
        out += [_figure_html(f) for f in s.figures]
        if s.curves:
            out.append(f"<details><summary>training and dev curves ({len(s.curves)} runs)"
                       "</summary>" + "".join(_figure_html(f) for f in s.curves) + "</details>")
    if not sections:
        out.append("<p>(no results yet)</p>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(records: list[dict], suite: dict, out_dir: str | Path,
                 curves: bool = True) -> dict[str, Path]:
    """Write leaderboard.md, cells.csv, scores.csv, the PNGs and index.html into `out_dir`;
    return {'markdown', 'cells_csv', 'scores_csv', 'html'} paths (PNGs beside them)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = aggregate(records)
    corpora = sorted({c.corpus for c in cells})
    scores = {name: superb_scores(cells, suite, name) for name in corpora}
    md = out / "leaderboard.md"
    md.write_text(markdown_table(records, suite=suite) + "\n")
    cells_csv, scores_csv = write_csvs(cells, scores, out)
    sections = []
    for name in corpora:
        header, body = table_rows(cells, scores[name], name)
        figs = corpus_figures(cells, scores[name], name, out, curves=curves)
        for f in figs:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_bytes(f.png)
        runs = [f for f in figs if f.path.parent.name == "curves"]  # not `curves`: the flag
        task_scores = [[u, t, f"{v:.0f}"] for (u, t), v in sorted(scores[name].task.items())]
        sections.append(CorpusSection(name, header, body,
                                      table_notes(cells, scores[name], suite, name),
                                      [f for f in figs if f not in runs], runs, task_scores))
    page = out / "index.html"
    page.write_text(render_html(sections, f"speechssl leaderboard (suite {suite.get('name')})"))
    return {"markdown": md, "cells_csv": cells_csv, "scores_csv": scores_csv, "html": page}


def report_from_config(cfg) -> dict[str, Path] | None:
    """mode=leaderboard: read `cfg.leaderboard`, score with `cfg.suite`, write the report
    into `cfg.report_dir` and print the markdown table and the paths written."""
    from omegaconf import OmegaConf

    records = rows(cfg.leaderboard)
    if not records:
        print(f"(no results yet in {cfg.leaderboard}: run some cells first)")
        return None
    paths = write_report(records, OmegaConf.to_container(cfg.suite, resolve=True), cfg.report_dir)
    print(paths["markdown"].read_text())
    print("[leaderboard] wrote " + ", ".join(str(p) for p in paths.values())
          + f" and the PNGs beside them in {cfg.report_dir}")
    return paths


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    Callback = object


class LeaderboardCallback(Callback):
    """After a training sweep (`python run.py -m ...`), print and write the table once."""

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("mode") == "train":
            report_from_config(config)
