#!/usr/bin/env python
"""Dev-set scoring of ASR: WER and CER of a LibriSpeech-sized dev set (dev-clean: 2,703
utterances, ~54,000 words) with speechssl.metrics (rapidfuzz's C++ Levenshtein) against
the pure-Python dynamic programme the project used before (kept below as the baseline).

The sentences are synthetic: words drawn from a Zipf-distributed vocabulary of 5,000
made-up words (LibriSpeech dev-clean's lengths: 20 words on average, 1-90), hypotheses
with ~15 % of the words substituted, deleted or followed by an inserted word. The two
implementations alternate, repeat by repeat, on the same sentences; the table checks
that they give the same figures and prints medians and the speed-up. If jiwer is
installed (the dev extra), its WER and CER are printed too, as a third opinion.

    python benchmarks/bench_error_rates.py           # 2,703 utterances, 3 repeats
    python benchmarks/bench_error_rates.py --quick   # 300 utterances, 1 repeat
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_repo_to_path,
    fill_sizes,
    fmt,
    load_average,
    machine_header,
    median,
    table,
)

add_repo_to_path()
from speechssl.metrics import cer, wer  # noqa: E402

# ------------------------------------------------ the baseline: the former pure-Python path


def _strip_affix(ref, hyp):
    n, m = len(ref), len(hyp)
    start = 0
    while start < n and start < m and ref[start] == hyp[start]:
        start += 1
    end = 0
    while end < n - start and end < m - start and ref[n - 1 - end] == hyp[m - 1 - end]:
        end += 1
    return list(ref[start: n - end]), list(hyp[start: m - end])


def _last_row(ref, hyp):
    """The last row of the Levenshtein matrix, one row at a time (O(len(hyp)) memory)."""
    m = len(hyp)
    prev = list(range(m + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] * (m + 1)
        left = i
        for j in range(1, m + 1):
            diag = prev[j - 1] if r == hyp[j - 1] else prev[j - 1] + 1
            up = prev[j] + 1
            left = left + 1
            if up < left:
                left = up
            if diag < left:
                left = diag
            cur[j] = left
        prev = cur
    return prev


def python_edit_distance(ref, hyp) -> int:
    r, h = _strip_affix(ref, hyp)
    if len(r) < len(h):
        r, h = h, r
    return _last_row(r, h)[-1] if h else len(r)


def python_rate(refs, hyps) -> float:
    total = sum(len(r) for r in refs)
    return 100.0 * sum(python_edit_distance(r, h) for r, h in zip(refs, hyps, strict=True)) / total


def python_wer(refs, hyps) -> float:
    return python_rate([t.split() for t in refs], [t.split() for t in hyps])


def python_cer(refs, hyps) -> float:
    return python_rate([list(t.strip()) for t in refs], [list(t.strip()) for t in hyps])


# ------------------------------------------------------------------- the synthetic dev set


def dev_set(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` reference sentences and hypotheses with ~15 % word errors."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvk"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.choice((2, 3, 4, 4, 5, 6, 7, 9))))
             for _ in range(5000)]
    weights = [1.0 / (k + 1) for k in range(len(vocab))]
    refs, hyps = [], []
    for _ in range(n):
        length = min(90, max(1, int(rng.lognormvariate(2.85, 0.6))))
        words = rng.choices(vocab, weights, k=length)
        hyp = []
        for w in words:
            u = rng.random()
            if u < 0.08:
                hyp.append(rng.choices(vocab, weights)[0])  # substitution
            elif u < 0.12:
                continue  # deletion
            else:
                hyp.append(w)
            if rng.random() < 0.03:
                hyp.append(rng.choices(vocab, weights)[0])  # insertion
        refs.append(" ".join(words))
        hyps.append(" ".join(hyp))
    return refs, hyps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--utterances", type=int, default=None, help="default 2703 (--quick: 300)")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 1)")
    args = p.parse_args()
    fill_sizes(args, utterances=(2703, 300), repeats=(3, 1))
    refs, hyps = dev_set(args.utterances)
    words = sum(len(r.split()) for r in refs)
    chars = sum(len(r) for r in refs)
    print(f"# dev-set error rates: rapidfuzz vs pure Python\n\n{machine_header()}")
    print(f"- command: `{' '.join([sys.executable] + sys.argv)}`")
    print(f"- {len(refs)} synthetic utterances, {words} reference words, {chars} characters; "
          f"median of {args.repeats} alternating repeats\n")
    cases = {"WER": (python_wer, wer), "CER": (python_cer, cer)}
    times = {(m, side): [] for m in cases for side in ("python", "rapidfuzz")}
    values = {}
    for _ in range(args.repeats):
        for metric, fns in cases.items():
            for side, fn in zip(("python", "rapidfuzz"), fns, strict=True):
                t0 = time.perf_counter()
                values[metric, side] = fn(refs, hyps)
                times[metric, side].append(time.perf_counter() - t0)
    try:
        import jiwer
    except ImportError:
        jiwer = None
    rows = []
    for metric in cases:
        py, rf = median(times[metric, "python"]), median(times[metric, "rapidfuzz"])
        same = values[metric, "python"] == values[metric, "rapidfuzz"]
        ref = getattr(jiwer, metric.lower())(refs, hyps) * 100 if jiwer else None
        rows.append([metric, f"{values[metric, 'rapidfuzz']:.4f}", "yes" if same else "**NO**",
                     "-" if ref is None else f"{ref:.4f}", fmt(py * 1000), fmt(rf * 1000),
                     f"**{py / rf:.0f}x**"])
    print(table(["metric", "value %", "same as pure Python", "jiwer %", "pure Python ms",
                 "rapidfuzz ms", "speed-up"], rows))
    print("\n- speed-up = pure-Python median time / rapidfuzz median time (speechssl.metrics)")
    print(f"- load average at the end: {load_average()}")
    if not all(values[m, "python"] == values[m, "rapidfuzz"] for m in cases):
        sys.exit("the two implementations disagree")


if __name__ == "__main__":
    main()
