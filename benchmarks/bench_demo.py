#!/usr/bin/env python
"""End-to-end wall time and peak memory of the default demo,
``python run.py upstream=apc downstream=asr``, from a cold start and warm.

cold: fresh data_dir and out_dir: corpus synthesis + APC pre-training + features + probe.
warm: the same data_dir (the corpus is already there), a fresh out_dir: APC pre-training
      + features + probe.
Each run is a child process; its peak memory is the ru_maxrss that os.wait4 reports for it
(the largest of the child and the processes it waited for, e.g. the synthesis workers).
The test WER and the per-stage lines the run prints are collected from its output.

    python benchmarks/bench_demo.py                  # the default demo (default corpus)
    python benchmarks/bench_demo.py --size tiny      # same budgets, tiny corpus
    python benchmarks/bench_demo.py --quick          # tiny corpus, cut budgets (~1 minute)
    python benchmarks/bench_demo.py --repeats 3      # medians of 3 cold and 3 warm runs

The overrides are checked against the project's config (speechssl.config.check_overrides,
what run.py does first) before any run starts. The script exits with 1 when a run fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    add_repo_to_path,
    fmt,
    load_average,
    machine_header,
    median,
    table,
)

QUICK_OVERRIDES = ["upstream.pretrain.steps=2", "upstream.pretrain.batch_seconds=10",
                   "downstream.optim.max_steps=10", "downstream.optim.eval_every=10"]


def run_demo(python: str, data_dir: Path, out_dir: Path, overrides: list[str],
             log: Path) -> dict:
    """One child run; wall seconds, peak RSS (MiB), exit code and parsed facts."""
    cmd = [python, "run.py", "upstream=apc", "downstream=asr", f"data_dir={data_dir}",
           f"out_dir={out_dir}", *overrides]
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    wer = re.findall(r"test[^\n]*?\bwer\b[^0-9\n]*([0-9.]+)", text, flags=re.I)
    synth = re.findall(r"synthesized (\d+) utterances \(([0-9.]+) h\) in ([0-9.]+) s", text)
    pre = re.findall(r"\[pretrain\][^\n]*", text)
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode,
            "wer": wer[-1] if wer else None, "synth": synth[-1] if synth else None,
            "pretrain": pre[-1] if pre else None, "log": log}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny corpus and cut budgets: " + " ".join(QUICK_OVERRIDES))
    p.add_argument("--size", default="default", help="corpus.size (tiny|default|large)")
    p.add_argument("--repeats", type=int, default=1, help="cold and warm runs each")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs run.py")
    p.add_argument("--keep", action="store_true", help="keep the temporary dirs")
    p.add_argument("--tmp", default=None,
                   help="where the runs' data_dir / out_dir go (default: the system temp dir)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for run.py")
    args = p.parse_args()
    overrides = [f"corpus.size={'tiny' if args.quick else args.size}"]
    overrides += (QUICK_OVERRIDES if args.quick else []) + args.overrides
    add_repo_to_path()
    from speechssl.config import check_overrides
    from speechssl.errors import ConfigError

    try:  # a stale override fails here, at once, not in the child after minutes
        check_overrides(["upstream=apc", "downstream=asr", *overrides])
    except ConfigError as e:
        sys.exit(f"bench_demo.py: {e}")

    print(f"# end-to-end demo: python run.py upstream=apc downstream=asr\n\n{machine_header()}")
    print(f"- command: `{' '.join([sys.executable] + sys.argv)}`")
    print(f"- run.py overrides: `{' '.join(overrides)}` (plus fresh data_dir / out_dir); "
          f"{args.repeats} cold and {args.repeats} warm run(s), alternating\n", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-demo-", dir=args.tmp))
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    try:
        for r in range(args.repeats):
            data = root / f"data{r}"
            results["cold"].append(run_demo(args.python, data, root / f"out-cold{r}", overrides,
                                            root / f"cold{r}.log"))
            results["warm"].append(run_demo(args.python, data, root / f"out-warm{r}", overrides,
                                            root / f"warm{r}.log"))
            for kind in ("cold", "warm"):
                res = results[kind][-1]
                print(f"{kind} run {r}: rc={res['rc']} wall {res['wall']:.1f} s, peak RSS "
                      f"{res['rss_mib']:.0f} MiB, WER {res['wer']}; load {load_average()}",
                      file=sys.stderr, flush=True)
                if res["rc"] != 0:
                    tail = res["log"].read_text(errors="replace").splitlines()[-25:]
                    print("\n".join(tail), file=sys.stderr)
        rows = []
        for kind, runs in results.items():
            ok = [x for x in runs if x["rc"] == 0]
            if not ok:
                rows.append([kind, "failed", "-", "-", "-", "-"])
                continue
            wall = median([x["wall"] for x in ok])
            rss = max(x["rss_mib"] for x in ok)
            synth = ok[0]["synth"]
            rows.append([kind, f"{wall:.0f} s ({wall / 60:.1f} min)", f"{rss / 1024:.2f} GiB",
                         f"{[round(x['wall']) for x in ok]}",
                         f"{synth[2]} s for {synth[0]} utt ({synth[1]} h)" if synth else "-",
                         ok[-1]["wer"] or "-"])
        print(table(["run", "median wall", "peak RSS", "runs (s)", "synthesis", "test WER %"],
                    rows))
        cold, warm = results["cold"], results["warm"]
        if all(x["rc"] == 0 for x in cold + warm):
            ratio = median([x["wall"] for x in cold]) / median([x["wall"] for x in warm])
            print(f"\n- cold / warm wall time: {fmt(ratio)}")
        pre = next((x["pretrain"] for x in cold if x["pretrain"]), None)
        if pre:
            print(f"- pre-training (cold run): `{pre}`")
        print(f"- load average at the end: {load_average()}")
    finally:
        if args.keep:
            print(f"- kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if any(x["rc"] != 0 for x in results["cold"] + results["warm"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
