#!/usr/bin/env python
"""Our upstreams' rank order against the published SUPERB order of the same models.

Reads the results of one or more leaderboard stores (the runs of ``python run.py``), keeps
the tasks asked for (default PR, KS, SID, ER), and scores every upstream that has all of
them twice with the SUPERB score's linear scale (speechssl/score.py): ours with the
suite's reference points for our corpus (on the synthesized corpus: fbank of the same
stores as the baseline, the perfect score as the topline), and the published one from the
SUPERB leaderboard's numbers for the same model (benchmarks/superb_published.json, FBANK
baseline and topline of recipes/suite/superb.yaml). Prints both tables and the Spearman
rank correlation over the models present in both, with the models each rank came from.

    python benchmarks/ssl_rank.py --store outputs/leaderboard.sqlite
    python benchmarks/ssl_rank.py --store runs/a runs/b --tasks pr ks sid er asr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_repo_to_path, table  # noqa: E402

add_repo_to_path()

PUBLISHED = Path(__file__).resolve().parent / "superb_published.json"


def store_file(path: str) -> Path:
    p = Path(path)
    return p / "leaderboard.sqlite" if p.is_dir() else p


def published_scores(tasks: list[str], suite: dict, published: dict) -> dict[str, float]:
    """Model -> mean over ``tasks`` of the SUPERB scale of its published values."""
    from speechssl.score import reference_for, scaled

    points = reference_for(suite, "published")["points"]  # the '*' entry: SUPERB's corpora
    out = {}
    for model, values in published["models"].items():
        parts = []
        for t in tasks:
            pt = points[t][published["metrics"][t]]
            parts.append(scaled(values[t], pt["baseline"], pt["topline"]))
        out[model] = sum(parts) / len(parts)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", nargs="+", required=True,
                    help="leaderboard.sqlite files, or directories holding one")
    ap.add_argument("--tasks", nargs="+", default=["pr", "ks", "sid", "er"])
    ap.add_argument("--corpus", default=None, help="the corpus to rank (default: the only one)")
    args = ap.parse_args(argv)

    from speechssl import store
    from speechssl.metrics import spearman
    from speechssl.score import aggregate, load_suite, superb_scores

    published = json.loads(PUBLISHED.read_text())
    unknown = sorted(set(args.tasks) - set(published["metrics"]))
    if unknown:
        ap.error(f"no published values for {', '.join(unknown)}; "
                 f"tasks with them: {', '.join(published['metrics'])}")
    records = [r for s in args.store for r in store.rows(store_file(s))]
    cells = [c for c in aggregate(records) if c.task in args.tasks]
    corpora = sorted({c.corpus for c in cells})
    corpus = args.corpus or (corpora[0] if len(corpora) == 1 else None)
    if corpus is None:
        ap.error(f"the stores hold several corpora ({', '.join(corpora)}): pass --corpus")
    suite = load_suite("superb")
    ours = superb_scores(cells, {**suite, "tasks": list(args.tasks)}, corpus)
    complete = {u for u, n in ours.n_tasks.items() if n == len(args.tasks)}
    theirs = published_scores(args.tasks, suite, published)

    value = {(c.upstream, c.task): c.test for c in cells if c.corpus == corpus}
    rows = []
    for u in sorted(complete, key=lambda u: -ours.upstream[u]):
        rows.append([u, *(f"{value[(u, t)]:.2f}" for t in args.tasks), f"{ours.upstream[u]:.0f}",
                     f"{theirs[u]:.0f}" if u in theirs else "-"])
    print(f"corpus {corpus}; score over {', '.join(args.tasks)} "
          "(0 = fbank, 1000 = perfect on ours; SUPERB's FBANK and topline on the published)\n")
    print(table(["upstream", *args.tasks, "our score", "published score"], rows))
    shared = sorted(complete & set(theirs))
    for note in ours.notes:
        print(f"\n- {note}")
    if len(shared) < 3:
        print(f"\nSpearman: needs 3 models in both lists, has {len(shared)} ({', '.join(shared)})")
        return 0
    rho = spearman([ours.upstream[u] for u in shared], [theirs[u] for u in shared]) / 100
    print(f"\nSpearman rank correlation over {len(shared)} models ({', '.join(shared)}): "
          f"{rho:.3f}")
    print(f"published values: {published['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
