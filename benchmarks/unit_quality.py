"""Phone purity and PNMI of k-means units (HuBERT, Hsu et al., 2021, section IV-F): the MFCC
features of HuBERT's first iteration against layers of a trained upstream (a hubert, an apc:
any pre-training checkpoint), clustered the same way on the same pre-training utterances.

It answers: would a HuBERT trained on this model's units start from better targets than
MFCC's? (docs/upstreams.md, "Units from a cheaper model".)

    python benchmarks/unit_quality.py --teacher <model.safetensors> --layers 0 1 2
    python benchmarks/unit_quality.py --teacher <...> --set corpus.size=tiny --utterances 20
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="a speechssl pre-training checkpoint")
    p.add_argument("--layers", type=int, nargs="+", required=True,
                   help="indices of the teacher's hidden states to cluster")
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--utterances", type=int, default=300,
                   help="pre-training utterances clustered (a seeded subset; 0 = all)")
    p.add_argument("--n-init", type=int, default=1, help="k-means initialisations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="top-level config overrides (corpus.size=tiny, data_dir=...)")
    args = p.parse_args(argv)

    import torch

    from speechssl.data.corpus import load_corpus
    from speechssl.upstream.load import build_from_config

    overrides = ["upstream=hubert", f"upstream.num_clusters={args.clusters}",
                 f"upstream.kmeans_n_init={args.n_init}", f"upstream.kmeans_seed={args.seed}",
                 *args.set]
    cfg = compose_config(overrides)
    corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=False)
    items = corpus.items("pretrain", "train")
    if 0 < args.utterances < len(items):
        pick = np.random.RandomState(args.seed).choice(len(items), args.utterances, False)
        items = [items[i] for i in sorted(pick)]
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))

    rows = []
    sources = [("MFCC + deltas (HuBERT iteration 1)", [])]
    sources += [(f"layer {i} of {Path(args.teacher).name}",
                 ["upstream.iteration=2", f"upstream.teacher={args.teacher}",
                  f"upstream.teacher_layer={i}"]) for i in args.layers]
    for name, extra in sources:
        up = compose_config([*overrides, *extra]).upstream
        model = build_from_config(up)
        t0 = time.perf_counter()
        _, report = model.fit_targets(items, torch.device("cpu"))
        if "phone_purity" not in report:
            p.error("this corpus has no phone alignments: nothing to score units against")
        rows.append([name, report["frames"], f"{report['phone_purity']:.3f}",
                     f"{report['phone_pnmi']:.3f}", f"{report['cluster_perplexity']:.1f}",
                     f"{time.perf_counter() - t0:.0f}"])
    print(machine_header())
    print(f"- {len(items)} pre-training utterances of {cfg.corpus.name}, {args.clusters} "
          f"clusters, {args.n_init} initialisation(s), seed {args.seed}\n")
    print(table(["clustered features", "frames", "phone purity", "phone PNMI",
                 "cluster perplexity", "seconds"], rows))


if __name__ == "__main__":
    main()
