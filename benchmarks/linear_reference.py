#!/usr/bin/env python
"""The converged linear reference of a frozen upstream on the utterance-level tasks:
scikit-learn's LogisticRegression on mean-pooled features, standardised with train
statistics, C chosen on dev; and ASV's EER with cosine scoring of the mean-pooled features,
each less its mean over dimensions (the gain) and standardised (no training at all).

It is the yardstick of two questions: does the corpus leave headroom (a surface feature
such as fbank should not saturate a task: SID between 20 % and 50 %, no task above 80 %),
and do the project's probes converge (a default probe should come within 2 points of it).
Features come from the project's frozen-feature cache (the same files a run reads), so
a cell that was already run extracts nothing.

For a multi-layer upstream each layer is tried and the layer, like C, is chosen on dev.
IC fits one regression per field (action, object, location); an utterance is right when
all three are, as the task scores it.

    python benchmarks/linear_reference.py                          # fbank, default corpus
    python benchmarks/linear_reference.py --upstream apc --tasks ks sid
    python benchmarks/linear_reference.py --set corpus.size=tiny --C 0.1 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_repo_to_path,
    compose_config,
    machine_header,
    table,
)

add_repo_to_path()

TASKS = ("sid", "ks", "er", "ic", "asv")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def pooled_splits(cfg) -> tuple[object, dict[str, list[dict]], dict[str, np.ndarray]]:
    """The task, its splits and each split's mean-pooled features (N, L, D) float64, read
    through the frozen-feature cache exactly as ``python run.py`` would."""
    from speechssl.features import cached_features, extract_features
    from speechssl.train import feature_key, prepare_cell

    cell = prepare_cell(cfg)
    pooled = {}
    for split, items in cell.splits.items():
        feats = None
        if cfg.cache:
            feats = cached_features(
                cell.upstream, items, cell.device, key=feature_key(cfg, cell, split),
                root=cfg.cache_dir, budget_gb=float(cfg.cache_budget_gb),
                batch_seconds=float(cfg.downstream.optim.extract_batch_seconds),
                num_workers=int(cfg.num_workers or 0), progress=cfg.progress,
                desc=f"{cfg.upstream.name} features ({split})")
        if feats is None:
            feats = extract_features(cell.upstream, items, cell.device, progress=cfg.progress)
        pooled[split] = np.stack([f.float().mean(1).numpy() for f in feats]).astype(np.float64)
    return cell.task, cell.splits, pooled


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Per-dimension z-scores with the train split's mean and standard deviation."""
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-8] = 1.0
    return [(x - mean) / std for x in (train, *others)]


def fit_predict(x_train, y_train, x_eval: list[np.ndarray], c: float, max_iter: int):
    """Fitted multinomial logistic regression's predictions on each of ``x_eval`` and
    whether lbfgs converged."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=max_iter).fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return [model.predict(x) for x in x_eval], converged


def classification(task, splits, pooled, c_grid, max_iter) -> dict:
    """Dev-best (layer, C) of a logistic regression per label field; test accuracy."""
    fields = getattr(task, "fields", None)
    refs = {s: [task.reference(it) for it in splits[s]] for s in ("train", "dev", "test")}
    columns = list(zip(*refs["train"], strict=True)) if fields else [refs["train"]]
    labels = {s: (list(zip(*refs[s], strict=True)) if fields else [refs[s]]) for s in refs}
    best = None
    for layer in range(pooled["train"].shape[1]):
        xs = standardise(*(pooled[s][:, layer] for s in ("train", "dev", "test")))
        for c in c_grid:
            right = {"dev": True, "test": True}
            all_converged = True
            for k in range(len(columns)):
                (dev, test), converged = fit_predict(xs[0], np.array(labels["train"][k]),
                                                     xs[1:], c, max_iter)
                all_converged &= converged
                right["dev"] = right["dev"] & (dev == np.array(labels["dev"][k]))
                right["test"] = right["test"] & (test == np.array(labels["test"][k]))
            dev_acc, test_acc = (100.0 * float(np.mean(right[s])) for s in ("dev", "test"))
            if best is None or dev_acc > best["dev"]:
                best = {"dev": dev_acc, "test": test_acc, "C": c, "layer": layer,
                        "converged": all_converged}
    return best


def verification(task, splits, pooled) -> dict:
    """EER (%) of cosine scoring of mean-pooled features (level removed, standardised), per
    layer, on the test trials and (when the task holds out dev speakers) the dev trials; the
    layer is chosen on dev EER, or, without dev trials, the best test EER is shown with its
    layer (for a multi-layer upstream)."""
    from speechssl import metrics

    evaluated = [s for s in ("dev", "test") if s in task.trials]
    best = None
    for layer in range(pooled["train"].shape[1]):
        train = pooled["train"][:, layer]
        # each vector less its mean over dimensions: for log-mel features, the recording's
        # gain, which otherwise dominates the cosine (EER 42 % instead of 23 % on fbank)
        xs = standardise(train - train.mean(1, keepdims=True),
                         *(pooled[s][:, layer] - pooled[s][:, layer].mean(1, keepdims=True)
                           for s in evaluated))
        eer = {}
        for split, x in zip(evaluated, xs[1:], strict=True):
            unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
            trials = task.trials[split]
            eer[split] = metrics.eer([float(unit[e] @ unit[t]) for _, e, t in trials],
                                     [t[0] for t in trials])  # in percent
        key = evaluated[0]
        if best is None or eer[key] < best[key]:
            best = {**eer, "layer": layer}
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", default="fbank")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--C", type=float, nargs="+", default=list(C_GRID),
                   help="inverse regularisation strengths tried on dev")
    p.add_argument("--max-iter", type=int, default=5000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a root config override, e.g. corpus.size=tiny or data_dir=/data")
    args = p.parse_args(argv)
    for item in args.set:
        if "=" not in item.lstrip("+"):
            p.error(f"--set {item!r}: expected KEY=VALUE")
    extra = list(args.set)  # Hydra overrides of the root config, as run.py takes them
    from speechssl.runtime import set_threads

    set_threads(compose_config([f"upstream={args.upstream}", *extra]).num_threads)
    print(machine_header())
    rows = []
    for name in args.tasks:
        t0 = time.time()
        cfg = compose_config([f"upstream={args.upstream}", f"downstream={name}", *extra])
        task, splits, pooled = pooled_splits(cfg)
        n_layers = pooled["train"].shape[1]
        if name == "asv":
            r = verification(task, splits, pooled)
            dev = f"{r['dev']:.2f}" if "dev" in r else "-"
            rows.append([name, "EER %", f"{r['test']:.2f}", dev, "-", "cosine, no training",
                         r["layer"] if n_layers > 1 else "-", f"{time.time() - t0:.0f}"])
        else:
            r = classification(task, splits, pooled, args.C, args.max_iter)
            rows.append([name, "accuracy %", f"{r['test']:.2f}", f"{r['dev']:.2f}", r["C"],
                         "yes" if r["converged"] else "NO (raise --max-iter)",
                         r["layer"] if n_layers > 1 else "-", f"{time.time() - t0:.0f}"])
        print(f"[reference] {name}: {rows[-1][2]} ({rows[-1][1]})", file=sys.stderr, flush=True)
    print()
    print(f"upstream={args.upstream} {' '.join(extra)}".strip())
    print()
    print(table(["task", "metric", "test", "dev", "C", "converged", "layer", "s"], rows))


if __name__ == "__main__":
    main()
