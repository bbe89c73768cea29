"""Aggregation of the stored runs into upstream x task x corpus cells (dev-selected probe
config, mean ± std over seeds, folds averaged) and the SUPERB score with the suite's
reference points (Yang et al., 2021, SUPERB, and superbbenchmark.org)."""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from speechssl.config import RECIPES
from speechssl.errors import ConfigError

# keys of the downstream config that say which run of a cell this is, not how it was tuned
# (train_items: a low-resource run is a row of its own, see upstream_label)
NOT_A_VARIANT = ("fold", "train_items")


# ---------------------------------------------------------------- cells


@dataclass
class CellResult:
    """One upstream x task x corpus cell: the dev-selected variant, over seeds and folds.

    `metrics[name] = (mean, std)` over seeds of every test metric (std 0 for one seed);
    `choice` says which variant won when several probe configs (e.g. lr) were run, and
    `selected_on` on which split ('dev', or 'test' when no run has a dev score)."""

    corpus: str
    upstream: str
    task: str
    metric: str
    higher_is_better: bool
    test: float
    test_std: float
    dev: float | None
    n_seeds: int
    n_folds: int
    n_variants: int
    choice: str
    metrics: dict[str, tuple[float, float]]
    selected_on: str = "dev"
    runs: list[dict] = field(repr=False, default_factory=list)

    @property
    def converged(self) -> bool | None:
        """Whether every run of the chosen variant's probe converged (speechssl/convergence.py);
        None when a run does not say (no probe, or recorded before the column existed)."""
        flags = [r.get("converged") for r in self.runs]
        if not flags or any(f is None for f in flags):
            return None
        return all(bool(f) for f in flags)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.lru_cache(maxsize=8192)  # two sections a row
def _config_section(config_yaml: str, key: str) -> dict:
    """The `key` section of a run's config_yaml ({} when absent or unreadable)."""
    try:
        cfg = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return {}
    section = cfg.get(key) if isinstance(cfg, dict) else None
    return section if isinstance(section, dict) else {}


def _downstream_yaml(config_yaml: str) -> dict:
    """The `downstream` section of a run's config_yaml ({} when absent or unreadable)."""
    return _config_section(config_yaml, "downstream")


def _tuning_yaml(config_yaml: str) -> dict:
    """The `tuning` section of a run's config_yaml ({} when absent: frozen)."""
    return _config_section(config_yaml, "tuning")


def _run_config(row: dict) -> dict:
    """The run's downstream config, flattened (`optim.lr` ...), without the fold, plus the
    tuning hyper-parameters (`tuning.rank` ...) of a tuned run."""
    flat = _flatten(_downstream_yaml(row.get("config_yaml") or ""))
    tc = _tuning_yaml(row.get("config_yaml") or "")
    if tc.get("name", "frozen") != "frozen":
        flat.update(_flatten(tc, "tuning."))
    return {k: v for k, v in flat.items() if k not in NOT_A_VARIANT}


def upstream_label(row: dict) -> str:
    """The upstream as the tables show it: its name, with the tuning mode when it is not
    frozen and the training-set size when it was cut (`bert [lora]`, `bert [full, 500 train
    items]`), so such runs are separate rows, never variants of one another."""
    mode = row.get("tuning") or "frozen"
    tags = [] if mode == "frozen" else [mode]
    n = _downstream_yaml(row.get("config_yaml") or "").get("train_items")
    if n is not None:
        tags.append(f"{n} train items")
    return f"{row['upstream']} [{', '.join(tags)}]" if tags else row["upstream"]


def run_fold(row: dict):
    """`downstream.fold` of the run (ER on IEMOCAP runs per fold), else None."""
    return _downstream_yaml(row.get("config_yaml") or "").get("fold")


def run_metrics(row: dict, split: str) -> dict[str, float]:
    """All metrics of one run on `split` ('dev' | 'test'); the headline value always."""
    try:
        stored = json.loads(row.get("metrics_json") or "{}").get(split) or {}
    except (json.JSONDecodeError, AttributeError):
        stored = {}
    headline = row.get(f"{split}_value")
    if headline is not None:
        stored = {**stored, row["metric"]: headline}
    return {k: float(v) for k, v in stored.items() if isinstance(v, int | float)}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _one_run_per_fold(runs: list[dict]) -> list[dict]:
    """A seed's runs, each fold once: the latest run of a fold is kept. A run without a
    fold beside numbered ones read fold 1 (ER on IEMOCAP before ``fold=null`` meant all
    five), so it counts as fold 1, never as a sixth fold."""
    numbered = any(run_fold(r) is not None for r in runs)
    latest: dict = {}
    for r in sorted(runs, key=lambda r: r.get("timestamp") or 0.0):
        fold = run_fold(r)
        latest[1 if fold is None and numbered else fold] = r
    return list(latest.values())


def _over_seeds_and_folds(runs: list[dict], split: str) -> tuple[dict[str, list[float]], int]:
    """Per metric, one value per seed (folds of a seed averaged, each fold once); and the
    fold count."""
    by_seed: dict = {}
    for r in runs:
        by_seed.setdefault(r.get("seed"), []).append(r)
    folds = [_one_run_per_fold(rs) for rs in by_seed.values()]
    per_metric: dict[str, list[float]] = {}
    for seed_runs in folds:
        fold_metrics = [run_metrics(r, split) for r in seed_runs]
        names = set.intersection(*(set(m) for m in fold_metrics))
        for name in names:
            per_metric.setdefault(name, []).append(_mean([m[name] for m in fold_metrics]))
    return per_metric, max(len(f) for f in folds)


def _describe_choice(variants: dict, winner) -> str:
    """The config keys whose values differ between variants, at the winner's values."""
    if len(variants) < 2:
        return ""
    configs = [dict(v) for v in variants]
    keys = sorted({k for c in configs for k in c if len({repr(o.get(k)) for o in configs}) > 1})
    chosen = dict(winner)
    return ", ".join(f"{k}={chosen.get(k)}" for k in keys)


def aggregate(records: list[dict]) -> list[CellResult]:
    """Group runs into upstream x task x corpus cells. Runs that differ in the probe config
    (lr, probe size, weights) are variants: the one with the best mean dev value wins (the
    best test value where no run has dev); its test value is mean ± std over seeds, each
    seed's value the mean over folds."""
    groups: dict[tuple, dict] = {}
    for r in records:
        key = (r["corpus"], upstream_label(r), r["task"])
        variant = tuple(sorted({**_run_config(r), "weights": r.get("weights_hash")}.items(),
                               key=lambda kv: kv[0]))
        variant = tuple((k, repr(v) if isinstance(v, list | dict) else v) for k, v in variant)
        groups.setdefault(key, {}).setdefault(variant, []).append(r)
    cells = []
    for (corpus, upstream, task), variants in sorted(groups.items()):
        first = next(iter(variants.values()))[0]
        metric, hib = first["metric"], bool(first["higher_is_better"])
        scored = []
        for variant, runs in variants.items():
            test, n_folds = _over_seeds_and_folds(runs, "test")
            dev, _ = _over_seeds_and_folds(runs, "dev")
            if metric not in test:
                continue
            dev_mean = _mean(dev[metric]) if metric in dev else None
            scored.append((variant, runs, test, dev_mean, n_folds))
        if not scored:
            continue
        use_dev = all(s[3] is not None for s in scored)
        sign = 1.0 if hib else -1.0
        variant, runs, test, dev_mean, n_folds = max(
            scored, key=lambda s: sign * (s[3] if use_dev else _mean(s[2][metric])))
        metrics = {k: (_mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                   for k, v in test.items()}
        cells.append(CellResult(corpus, upstream, task, metric, hib, metrics[metric][0],
                                metrics[metric][1], dev_mean, len(test[metric]), n_folds,
                                len(variants), _describe_choice(variants, variant), metrics,
                                "dev" if use_dev else "test", runs))
    return cells


# ---------------------------------------------------------------- the SUPERB score


def load_suite(name_or_path: str | Path) -> dict:
    """A suite from recipes/suite/NAME.yaml (or a yaml path), checked by `check_suite`."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES / "suite" / f"{name_or_path}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (RECIPES / "suite").glob("*.yaml"))
        raise ConfigError(f"suite={name_or_path}: no such suite file {path}; valid choices: "
                          f"{', '.join(choices)}")
    try:
        suite = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"suite file {path}: not valid yaml ({e})") from None
    check_suite(suite, where=str(path))
    return suite


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_suite(suite, where: str = "suite") -> None:
    """A suite is {name, tasks: [task...], run_order (optional: the tasks in the order
    their cells start), references: [{corpus: glob, provenance,
    points: {task: {metric: {baseline: number | 'fbank', topline: number}}}}]}."""
    if not isinstance(suite, dict):
        raise ConfigError(f"{where}: a suite is a mapping with name, tasks, references")
    tasks = suite.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"{where}: suite.tasks must be a non-empty list of task names")
    order = suite.get("run_order", tasks)
    if not isinstance(order, list) or sorted(order) != sorted(tasks):
        raise ConfigError(f"{where}: suite.run_order must list the suite's tasks, each once, "
                          f"in the order their cells start (got {order!r})")
    refs = suite.get("references", [])
    if not isinstance(refs, list):
        raise ConfigError(f"{where}: suite.references must be a list")
    for i, ref in enumerate(refs):
        key = f"{where}: suite.references[{i}]"
        if not isinstance(ref, dict) or not isinstance(ref.get("corpus"), str):
            raise ConfigError(f"{key}.corpus must be a corpus name pattern (e.g. 'synth-*')")
        if not isinstance(ref.get("points"), dict):
            raise ConfigError(f"{key}.points must map task -> metric -> baseline/topline")
        for task, metrics in ref["points"].items():
            if not isinstance(metrics, dict) or not metrics:
                raise ConfigError(f"{key}.points.{task} must map metric -> baseline/topline")
            for metric, pt in metrics.items():
                k = f"{key}.points.{task}.{metric}"
                if not isinstance(pt, dict) or not _is_number(pt.get("topline")):
                    raise ConfigError(f"{k}.topline must be a number")
                base = pt.get("baseline")
                if not (_is_number(base) or base == "fbank"):
                    raise ConfigError(f"{k}.baseline must be a number or 'fbank' (measured), "
                                      f"got {base!r}")
                if base != "fbank" and base == pt["topline"]:
                    raise ConfigError(f"{k}: baseline equals topline ({base}); no scale")


def reference_for(suite: dict, corpus: str) -> dict | None:
    """The first reference entry whose corpus pattern matches `corpus`, or None."""
    for ref in suite.get("references", []):
        if fnmatch.fnmatchcase(corpus, ref["corpus"]):
            return ref
    return None


def scaled(value: float, baseline: float, topline: float) -> float:
    """SUPERB's linear scale: 0 at the baseline, 1000 at the topline, no clipping; a
    lower-is-better metric needs no special case (the denominator is negative)."""
    return 1000.0 * (value - baseline) / (topline - baseline)


@dataclass
class Scores:
    """SUPERB scores of one corpus: per (upstream, task), and per upstream over the suite
    tasks that are scored (`n_tasks` of `suite_tasks`); `notes` say what is not scored."""

    task: dict[tuple[str, str], float]
    upstream: dict[str, float]
    n_tasks: dict[str, int]
    suite_tasks: list[str]
    notes: list[str]


def superb_scores(cells: list[CellResult], suite: dict, corpus: str) -> Scores:
    """Score every cell of `corpus` with the suite's reference points. A task's score is
    the mean of its metrics' scores (SF: slot-type F1 and slot-value CER); an upstream's
    score the mean over its scored suite tasks."""
    mine = [c for c in cells if c.corpus == corpus]
    ref = reference_for(suite, corpus)
    notes: list[str] = []
    task_scores: dict[tuple[str, str], float] = {}
    if ref is None:
        notes.append(f"no reference points for corpus {corpus} in suite {suite.get('name')}: "
                     "not scored")
        return Scores({}, {}, {}, list(suite["tasks"]), notes)
    points = ref["points"]
    fbank = {c.task: c for c in mine if c.upstream == "fbank"}
    unscored = sorted({c.task for c in mine} - set(points))
    if unscored:
        notes.append("no reference points (shown, not scored): " + ", ".join(unscored))
    off_suite = sorted({c.task for c in mine if c.task in points} - set(suite["tasks"]))
    if off_suite:
        notes.append("not in the suite (scored, not in the average): " + ", ".join(off_suite))
    missing_base: set[str] = set()
    for c in mine:
        if c.task not in points:
            continue
        parts = []
        for metric, pt in points[c.task].items():
            base = pt["baseline"]
            if base == "fbank":
                if c.task not in fbank or metric not in fbank[c.task].metrics:
                    missing_base.add(c.task)
                    break
                base = fbank[c.task].metrics[metric][0]
            if metric not in c.metrics or base == pt["topline"]:
                break
            parts.append(scaled(c.metrics[metric][0], base, pt["topline"]))
        else:
            task_scores[(c.upstream, c.task)] = _mean(parts)
    if missing_base:
        notes.append("no fbank run to measure the baseline (not scored): "
                     + ", ".join(sorted(missing_base)))
    upstream_scores, n_tasks = {}, {}
    for u in sorted({c.upstream for c in mine}):
        vals = [s for (uu, t), s in task_scores.items() if uu == u and t in suite["tasks"]]
        if vals:
            upstream_scores[u], n_tasks[u] = _mean(vals), len(vals)
    return Scores(task_scores, upstream_scores, n_tasks, list(suite["tasks"]), notes)
