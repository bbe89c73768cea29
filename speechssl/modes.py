"""The run modes (``mode=``): what ``python run.py`` does once the config is checked.
Each is a function of the config, registered here by name; its work lives in the module
it imports."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from speechssl.registry import Registry

MODES = Registry("mode")


@MODES.register("train")
def train(cfg: DictConfig) -> None:
    """Features of the frozen upstream, probe trained on train, best on dev kept, one test
    evaluation, one leaderboard row (one per lr of ``lr_search`` and per fold of
    :func:`fold_configs`); the table after it (a sweep prints it once, at its
    end: speechssl.report.LeaderboardCallback)."""
    from speechssl.distributed import is_main
    from speechssl.report import markdown_table
    from speechssl.store import check_store, rows
    from speechssl.train import train_cell

    check_store(cfg.leaderboard)  # a damaged or read-only store stops before any training
    folds, rows_ = fold_configs(cfg), []
    for fold_cfg in folds:
        fold_rows = [train_cell(c) for c in lr_search_configs(fold_cfg)]
        if len(fold_rows) > 1 and is_main():
            print(lr_search_summary(fold_rows))
        rows_ += fold_rows
    row = rows_[-1]
    if len(folds) > 1 and is_main():
        print(fold_summary(rows_))
    if is_main() and not in_sweep():
        print()
        print(markdown_table(rows(cfg.leaderboard), corpus=row["corpus"],
                             suite=OmegaConf.to_container(cfg.suite)))


def fold_configs(cfg: DictConfig) -> list[DictConfig]:
    """``cfg`` itself, or for a task with a ``fold`` option left null on a corpus with
    ``corpus.folds`` (ER on IEMOCAP) one config per fold: SUPERB reports the mean over the
    five leave-one-session-out folds. Each fold is its own run and row; the leaderboard
    averages a cell's folds, each once."""
    folds = cfg.corpus.get("folds")
    if not folds or "fold" not in cfg.downstream or cfg.downstream.fold is not None:
        return [cfg]
    out = []
    for k in range(1, int(folds) + 1):
        c = cfg.copy()
        c.downstream.fold = k
        out.append(c)
    return out


def fold_summary(rows: list[dict]) -> str:
    """Each fold's test value and their mean, as the leaderboard scores the cell
    (:func:`speechssl.score.aggregate`: the dev-best probe config, each fold once)."""
    from speechssl.score import aggregate, run_fold

    (cell,) = aggregate(rows)
    tests = {run_fold(r): r["test_value"] for r in cell.runs}
    parts = ", ".join(f"fold {k} {tests[k]:.2f}" for k in sorted(tests))
    return (f"[train] {cell.task} over {len(tests)} folds (test {cell.metric}): "
            f"{parts}; mean {cell.test:.2f}")


def lr_search_configs(cfg: DictConfig) -> list[DictConfig]:
    """The configs a train run trains: ``cfg`` itself, or with ``lr_search=true`` one per
    learning rate of ``downstream.optim.lr_grid`` (SUPERB's search, Yang et al. 2021: the
    probe's lr chosen on dev per upstream and task). Each is its own run (its own
    directory and row); runs on one cache share its features; the leaderboard shows the
    dev-best as the cell, with the lr it chose. A task that trains nothing (QbE) or has no
    dev metric to choose on (ASV with ``dev_speakers=0``) runs once, said in one line."""
    from downstream.base import task_from_config

    if not cfg.get("lr_search", False):
        return [cfg]
    task = task_from_config(cfg.downstream)
    grid = list(cfg.downstream.optim.get("lr_grid") or [])
    if not task.trainable or not task.selects_on_dev or not grid:
        why = ("it trains no probe" if not task.trainable else
               "it has no dev metric to choose on" if not task.selects_on_dev else
               "downstream.optim.lr_grid is empty")
        print(f"[train] lr_search: {task.name} runs at lr={cfg.downstream.optim.lr} only: {why}")
        return [cfg]
    out = []
    for lr in grid:
        c = cfg.copy()
        c.downstream.optim.lr = float(lr)
        out.append(c)
    return out


def lr_search_summary(rows: list[dict]) -> str:
    """One line per lr of a search, the dev-best marked."""
    sign = 1.0 if rows[0]["higher_is_better"] else -1.0
    best = max(rows, key=lambda r: sign * r["dev_value"])
    lines = [f"[train] lr search of {rows[0]['upstream']} x {rows[0]['task']} "
             f"(dev {rows[0]['metric']}):"]
    for r in rows:
        lr = OmegaConf.create(r["config_yaml"]).downstream.optim.lr
        still = ", still improving" if r.get("converged") == 0 else ""
        lines.append(f"  lr={lr:g}: dev {r['dev_value']:.2f}, test {r['test_value']:.2f}"
                     f"{still}{'  <- the leaderboard keeps this one' if r is best else ''}")
    return "\n".join(lines)


@MODES.register("evaluate")
def evaluate(cfg: DictConfig) -> None:
    """Re-score the kept best probe of a trained cell on test."""
    from speechssl.train import evaluate_cell

    evaluate_cell(cfg)


@MODES.register("pretrain")
def pretrain(cfg: DictConfig) -> None:
    """Self-supervised pre-training of ``upstream=`` on the corpus (resumes)."""
    from speechssl.data.corpus import load_corpus
    from speechssl.distributed import main_first
    from speechssl.pretrain import pretrain as run_pretraining
    from speechssl.runtime import resolve_device

    with main_first():  # rank 0 synthesizes the corpus if needed, the others read it
        corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
    run_pretraining(cfg, corpus, resolve_device(cfg.device))


@MODES.register("synth")
def synth(cfg: DictConfig) -> None:
    """Generate the synthesized corpus only."""
    from speechssl.data.corpus import load_corpus

    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
    hours = corpus.meta.get("hours", {})
    print(f"[synth] {corpus.root}: " + ", ".join(f"{k} {v:.2f} h" for k, v in hours.items()))


@MODES.register("export")
def export(cfg: DictConfig) -> None:
    """Write the upstream's weights as safetensors + yaml."""
    from speechssl.export import export_upstream

    print(export_upstream(cfg))


@MODES.register("leaderboard")
def leaderboard(cfg: DictConfig) -> None:
    """The upstream x task table with the SUPERB score; CSV, HTML and plots."""
    from speechssl.report import report_from_config
    from speechssl.store import check_store

    check_store(cfg.leaderboard, write=False)  # reading is all this mode does
    report_from_config(cfg)


@MODES.register("compare")
def compare(cfg: DictConfig) -> None:
    """Fine-tuned pre-trained upstream vs the same architecture from scratch."""
    from speechssl.compare import compare as run_compare
    from speechssl.store import check_store

    check_store(cfg.leaderboard)  # both arms record a row
    run_compare(cfg)


@MODES.register("fewshot")
def fewshot(cfg: DictConfig) -> None:
    """In-context learning (speechssl/text/fewshot.py): the causal LM upstream (gpt) labels
    the task's test items from k demonstrations in its prompt, no gradient update, for every
    k of ``fewshot.shots`` and ``fewshot.seeds`` draws; the accuracy against k is printed
    and written to ``<out_dir>/fewshot/<upstream tag>-<task>.json``."""
    from speechssl.text.fewshot import run_fewshot

    run_fewshot(cfg)


@MODES.register("early_exit")
def early_exit(cfg: DictConfig) -> None:
    """DeeBERT's early exit (speechssl/text/early_exit.py): an off-ramp per layer of the bert
    upstream, trained in two stages on a sentence task; accuracy against the average layers
    run and the wall time saved, over ``early_exit.thresholds``."""
    from speechssl.text.early_exit import run_early_exit

    run_early_exit(cfg)


@MODES.register("prompt_finetune")
def prompt_finetune(cfg: DictConfig) -> None:
    """LM-BFF's prompt-based fine-tuning of the bert upstream (speechssl/text/
    prompt_finetune.py) against [CLS] + linear fine-tuning, at each of
    ``prompt_finetune.train_items``."""
    from speechssl.text.prompt_finetune import run_prompt_finetune

    run_prompt_finetune(cfg)


def in_sweep() -> bool:
    """True inside a Hydra multirun job (`python run.py -m ...`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
