#!/usr/bin/env python
"""Corpus synthesis throughput: seconds of audio written per second of wall time.

Each run synthesizes the whole corpus of one size (speechssl.data.synth.generate.
generate_corpus: eSpeak NG, augmentation, WAV + manifests, fsync) into a fresh temporary
directory, with one process (num_workers=1) and with the parallel setting (num_workers =
os.cpu_count(), the default of ``corpus.num_workers=null``). The settings alternate, repeat
by repeat, so load drifts hit both; medians are printed with the parallel speed-up. The
eSpeak voice overlay is built once before timing (it is cached across runs anyway). The
text corpus that ensure_corpus also writes is not part of this measurement.

    python benchmarks/bench_synth.py              # tiny corpus, 3 repeats per setting
    python benchmarks/bench_synth.py --quick      # tiny corpus, 1 repeat per setting
    python benchmarks/bench_synth.py --size default --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
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

from speechssl.data.synth.espeak import writable_data_dir  # noqa: E402
from speechssl.data.synth.generate import generate_corpus  # noqa: E402


def one_run(size: str, seed: int, workers: int, tmp_root: Path) -> tuple[float, float, int]:
    """(wall seconds, seconds of audio, utterances) of one synthesis into a fresh dir."""
    out = Path(tempfile.mkdtemp(prefix="synth-", dir=tmp_root)) / "corpus"
    try:
        t0 = time.perf_counter()
        generate_corpus(out, size, seed, workers, progress=False)
        wall = time.perf_counter() - t0
        meta = json.loads((out / "meta.json").read_text())
        audio_s = 3600.0 * sum(h for sub, h in meta["hours"].items() if sub != "pretrain")
        utts = sum(sum(c.values()) for sub, c in meta["counts"].items() if sub != "pretrain")
        return wall, audio_s, utts
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 repeat per setting")
    p.add_argument("--size", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 1)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="the parallel setting (default: os.cpu_count())")
    p.add_argument("--tmp", default=tempfile.gettempdir(), help="where the runs write")
    args = p.parse_args()
    fill_sizes(args, repeats=(3, 1))

    print(f"# corpus synthesis throughput\n\n{machine_header()}")
    print(f"- command: `{' '.join([sys.executable] + sys.argv)}`")
    print(f"- corpus size {args.size!r}, seed {args.seed}; {args.repeats} run(s) per setting, "
          f"alternating; each into a fresh directory under {args.tmp}\n", flush=True)
    writable_data_dir()
    settings = [1] + ([args.workers] if args.workers > 1 else [])
    runs: dict[int, list[tuple[float, float, int]]] = {w: [] for w in settings}
    for _ in range(args.repeats):
        for w in settings:
            runs[w].append(one_run(args.size, args.seed, w, Path(args.tmp)))
            wall, audio, _ = runs[w][-1]
            print(f"workers={w}: {wall:.1f} s for {audio:.0f} s of audio; load {load_average()}",
                  file=sys.stderr, flush=True)
    rows, base = [], None
    for w in settings:
        walls = [r[0] for r in runs[w]]
        audio_s, utts = runs[w][0][1], runs[w][0][2]
        wall = median(walls)
        base = base or wall
        rows.append([f"num_workers={w}", utts, f"{audio_s:.0f}", fmt(wall),
                     f"{[round(x, 1) for x in walls]}", fmt(audio_s / wall), fmt(utts / wall),
                     f"**{base / wall:.2f}x**"])
    print(table(["setting", "utterances", "audio s", "median wall s", "runs (s)",
                 "audio s / wall s", "utt / s", "speed-up vs 1 worker"], rows))
    print(f"\n- load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
