"""Embedded, deterministic, synthesized speech corpus (eSpeak NG) for every SUPERB-style task.

>>> from speechssl.data.synth import ensure_corpus
>>> corpus = ensure_corpus("data", "tiny", seed=0)   # doctest: +SKIP

See :func:`ensure_corpus` and the module docs of :mod:`.generate` for the on-disk layout.
"""

from .generate import SIZES, SUBSETS, corpus_dir_name, ensure_corpus

__all__ = ["ensure_corpus", "corpus_dir_name", "SIZES", "SUBSETS"]
