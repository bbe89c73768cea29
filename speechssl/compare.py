"""``mode=compare``: does pre-training help? The pre-trained upstream fine-tuned
(``tuning=full``) against the same architecture trained from its random initialisation
(``tuning=scratch``) with the same budget and hyper-parameters; Erhan et al., 2010, "Why
Does Unsupervised Pre-training Help Deep Learning?" asks the question, Devlin et al., 2019
(BERT) answer it for text. Both runs are leaderboard rows; their train-loss and dev-metric
curves (read from each run's TensorBoard log) share one PNG,
``${out_dir}/compare/<upstream>-<task>-<setup>.png`` (``<setup>`` hashes the pre-trained
arm's run id, so another budget or ``train_items`` never overwrites it), and the two
scores are printed as a table."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from speechssl import distributed as dist
from speechssl import plots
from speechssl.config import RECIPES
from speechssl.runtime import config_hash

ARMS = (("full", "pre-trained"), ("scratch", "random init"))


def arm_config(cfg: DictConfig, mode: str) -> DictConfig:
    """``cfg`` with ``tuning`` set to ``mode``: the user's tuning settings when they chose
    full or scratch (e.g. ``tuning=full tuning.upstream_lr=3e-5``), else full.yaml's; both
    arms use the same ones, so they differ in the initialisation only."""
    tc = cfg.get("tuning")
    base = tc if tc is not None and tc.name in ("full", "scratch") else OmegaConf.load(
        RECIPES / "tuning" / "full.yaml")
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.tuning = OmegaConf.merge(base, {"name": mode})
        out.mode = "train"
    return out


def table(rows: dict[str, dict]) -> str:
    """The two runs' final scores as a markdown table."""
    first = next(iter(rows.values()))
    lines = [f"| initialisation | tuning | trained params | dev {first['metric']} | "
             f"test {first['metric']} | wall time |", "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['tuning']} | {r['trainable_params']:,} | "
                     f"{r['dev_value']:.2f} | {r['test_value']:.2f} | {r['wall_time_s']:.0f} s |")
    return "\n".join(lines)


def compare(cfg: DictConfig) -> Path | None:
    """Train both arms (finished ones are reused), write the PNG and print the table.
    Returns the PNG's path (None on ranks other than 0)."""
    from speechssl.train import train_cell

    rows = {label: train_cell(arm_config(cfg, mode)) for mode, label in ARMS}
    if not dist.is_main():
        return None
    metric = next(iter(rows.values()))["metric"]
    series = {}
    for label, r in rows.items():
        tb = plots.read_tb_scalars(Path(r["run_dir"]) / "tb")
        series[label] = {"train": tb.get("train/loss", ([], [])),
                         "dev": tb.get(f"dev/{metric}", ([], []))}
    task = next(iter(rows.values()))["task"]
    title = f"{cfg.upstream.name} x {task}: fine-tuned from pre-training vs. from scratch"
    setup = config_hash(rows[ARMS[0][1]]["run_id"], 8)
    path = Path(cfg.out_dir) / "compare" / f"{cfg.upstream.name}-{task}-{setup}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plots.runs_curves_png(series, metric, title))
    print()
    print(table(rows))
    print(f"\n[compare] curves: {path}")
    return path
