"""speechssl entry point: `python run.py upstream=apc downstream=asr` (see README.md)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from speechssl.errors import SpeechSSLError


@hydra.main(config_path="recipes", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except SpeechSSLError as e:  # bad input or config: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def run(cfg: DictConfig) -> None:
    from speechssl import leaderboard
    from speechssl.config import check_values
    from speechssl.runtime import resolve_device, seed_everything, set_threads

    check_values(cfg)
    set_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if cfg.mode == "synth":
        from speechssl.data.corpus import load_corpus

        corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
        hours = corpus.meta.get("hours", {})
        print(f"[synth] {corpus.root}: " + ", ".join(f"{k} {v:.2f} h" for k, v in hours.items()))
    elif cfg.mode == "pretrain":
        from speechssl.data.corpus import load_corpus
        from speechssl.pretrain import pretrain

        corpus = load_corpus(cfg.corpus, cfg.data_dir, progress=cfg.progress)
        pretrain(cfg, corpus, resolve_device(cfg.device))
    elif cfg.mode == "export":
        from speechssl.export import export_upstream

        print(export_upstream(cfg))
    elif cfg.mode == "evaluate":
        from speechssl.train import evaluate_cell

        evaluate_cell(cfg)
    else:
        from speechssl.train import train_cell

        row = train_cell(cfg)
        print()
        print(leaderboard.markdown_table(leaderboard.rows(cfg.leaderboard), corpus=row["corpus"]))


def cli() -> None:
    try:
        # upstream=my.pkg:Model (or an entry-point name) has no yaml recipe: route it
        # through recipes/upstream/plugin.yaml before Hydra sees the command line
        from speechssl.config import RECIPES
        from speechssl.upstream.plugin import rewrite_overrides

        sys.argv[1:] = rewrite_overrides(sys.argv[1:], RECIPES)
        overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
        if not any(a in ("-h", "--help", "--cfg", "-c", "--info") for a in sys.argv[1:]):
            from speechssl.config import check_overrides

            check_overrides(overrides)
        main()
    except SpeechSSLError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
