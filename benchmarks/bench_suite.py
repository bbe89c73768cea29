#!/usr/bin/env python
"""Wall time of the whole SUPERB suite for one upstream, task by task: where it goes
(setup, features, probe training, scoring), the score, and whether each probe converged.

Each task is one child ``python run.py upstream=U downstream=T force=true ...`` with a
fresh feature cache (its extraction is counted); the corpus in data_dir and the upstream's
pre-training are made first, untimed (``mode=synth``, ``mode=pretrain``). The per-stage times are the ones train.py
records in the row (``timing_json``); wall is the child's. With ``--baseline
DIR`` (a checkout of another commit, e.g. ``git worktree add /tmp/old <commit>``) each
task runs there too, on the same corpus, alternating, and the table gets the ratio
baseline wall / this wall.

    python benchmarks/bench_suite.py                          # fbank, default corpus
    python benchmarks/bench_suite.py --upstream apc           # pre-trains APC first (not timed)
    python benchmarks/bench_suite.py --tasks asr sd --baseline /tmp/old
    python benchmarks/bench_suite.py --quick                  # tiny corpus, cut budgets
    python benchmarks/bench_suite.py --jobs 2                 # as `run.py suite=superb` runs it

``--jobs N`` times the one command a user runs instead (``run.py suite=S``: N cells at a
time through recipes/hydra/launcher/parallel.yaml, in the suite's run_order, each with
cores / N threads, one shared feature cache); its total is that command's wall time, and
each task's time is the sum of its row's stages.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, add_repo_to_path, fmt, load_average, machine_header, table  # noqa: E402

QUICK = ["corpus.size=tiny", "downstream.optim.max_steps=6", "downstream.optim.eval_every=3"]
QUICK_PRETRAIN = ["upstream.pretrain.steps=2", "upstream.pretrain.batch_seconds=10"]


def pretrains(upstream: str) -> bool:
    add_repo_to_path()
    from speechssl.upstream.base import UPSTREAMS

    return UPSTREAMS.get(upstream).pretrains()


def suite_tasks(name: str) -> list[str]:
    add_repo_to_path()
    from speechssl.score import load_suite

    return list(load_suite(name)["tasks"])


def run_logged(cmd: list[str], cwd: Path, log: Path, what: str) -> float:
    """Run ``cmd`` in ``cwd`` with its output appended to ``log``: its wall time; a failure
    stops the bench naming ``what``."""
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        t0 = time.perf_counter()
        code = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{what} failed in {cwd} (exit {code}): see {log}")
    return wall


def run_task(root: Path, upstream: str, task: str, data_dir: Path, out_dir: Path,
             overrides: list[str], log: Path) -> dict:
    """One child run.py in checkout ``root``: its wall time and the row it recorded."""
    cmd = [sys.executable, "run.py", f"upstream={upstream}", f"downstream={task}",
           f"data_dir={data_dir}", f"out_dir={out_dir}", f"cache_dir={out_dir}/features-{task}",
           "force=true", "progress=false", *overrides]
    wall = run_logged(cmd, root, log, f"{upstream} x {task}")
    rows = sorted(Path(out_dir, "runs").rglob("result.json"), key=lambda p: p.stat().st_mtime)
    row = json.loads(rows[-1].read_text())
    return {"wall": wall, "row": row, "timing": json.loads(row.get("timing_json") or "{}")}


def run_suite(upstream: str, suite: str, tasks: list[str], jobs: int, data_dir: Path,
              out_dir: Path, overrides: list[str], log: Path) -> tuple[float, dict]:
    """``run.py suite=...`` as a user runs it, ``jobs`` cells at a time: (its wall time,
    {task: {"row", "timing", "wall"}}) with each task's wall the sum of its row's stages."""
    add_repo_to_path()
    from speechssl import store
    from speechssl.score import load_suite

    order = [t for t in load_suite(suite).get("run_order", tasks) if t in tasks]
    cmd = [sys.executable, "run.py", "-m", f"suite={suite}", f"upstream={upstream}",
           "hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}",
           f"data_dir={data_dir}", f"out_dir={out_dir}", "force=true", "progress=false",
           *overrides, "downstream=" + ",".join(order)]
    wall = run_logged(cmd, REPO, log, f"suite={suite} for {upstream}")
    rows = {r["task"]: r for r in store.rows(out_dir / "leaderboard.sqlite")
            if r["upstream"] == upstream}
    results = {}
    for task in tasks:
        timing = json.loads(rows[task].get("timing_json") or "{}")
        results[task] = {"row": rows[task], "timing": timing,
                         "wall": sum(v for k, v in timing.items() if k.endswith("_s"))}
    return wall, results


def prepare(root: Path, upstream: str, data_dir: Path, out_dir: Path, overrides: list[str],
            log: Path) -> None:
    """Synthesize the corpus and pre-train the upstream (when it pre-trains), untimed."""
    modes = ["synth", "pretrain"] if pretrains(upstream) else ["synth"]
    for mode in modes:
        cmd = [sys.executable, "run.py", f"mode={mode}", f"upstream={upstream}",
               f"data_dir={data_dir}", f"out_dir={out_dir}", "progress=false", *overrides]
        run_logged(cmd, root, log, f"mode={mode} for {upstream}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", default="fbank")
    p.add_argument("--suite", default="superb")
    p.add_argument("--tasks", nargs="+", default=None, help="default: the suite's tasks")
    p.add_argument("--data-dir", default=str(REPO / "data"))
    p.add_argument("--out-dir", default=None, help="default: a temporary directory")
    p.add_argument("--baseline", default=None, help="a checkout of another commit to compare")
    p.add_argument("--quick", action="store_true", help="tiny corpus, a few steps per task")
    p.add_argument("--jobs", type=int, default=0,
                   help="time `run.py suite=` itself, this many cells at a time (no --baseline)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run (Hydra syntax), e.g. num_threads=1")
    args = p.parse_args(argv)
    tasks = args.tasks or suite_tasks(args.suite)
    quick = QUICK + (QUICK_PRETRAIN if pretrains(args.upstream) else [])
    overrides = (quick if args.quick else []) + list(args.set)
    out_root = Path(args.out_dir or tempfile.mkdtemp(prefix="bench-suite-"))
    data_dir = Path(args.data_dir)
    roots = {"this": REPO} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})
    log = out_root / "runs.log"
    out_root.mkdir(parents=True, exist_ok=True)
    print(f"# the {args.suite} suite for {args.upstream}, task by task")
    print()
    print(machine_header())
    print(f"- overrides: {' '.join(overrides) or '(none)'}; log: {log}")
    if args.jobs and args.baseline:
        raise SystemExit("--jobs times this checkout's run.py suite=; --baseline is task by task")
    for side, root in roots.items():
        prepare(root, args.upstream, data_dir, out_root / side, overrides, log)
    results: dict[str, dict[str, dict]] = {side: {} for side in roots}
    suite_wall = None
    if args.jobs:
        suite_wall, results["this"] = run_suite(args.upstream, args.suite, tasks, args.jobs,
                                                data_dir, out_root / "this", overrides, log)
    for task in tasks if not args.jobs else []:
        for side, root in roots.items():
            results[side][task] = run_task(root, args.upstream, task, data_dir,
                                           out_root / side, overrides, log)
            r = results[side][task]
            print(f"[bench_suite] {side}: {task} {r['wall']:.0f} s", file=sys.stderr, flush=True)
    header = ["task", "metric", "test", "converged", "wall s", "setup s", "features s",
              "probe s", "scoring s", "threads"]
    if args.baseline:
        header += ["baseline wall s", "baseline / this"]
    body, total, base_total = [], 0.0, 0.0
    for task in tasks:
        r = results["this"][task]
        t = r["timing"]
        conv = {1: "yes", 0: "**no**"}.get(r["row"].get("converged"), "-")
        row = [task, r["row"]["metric"], f"{r['row']['test_value']:.2f}", conv, fmt(r["wall"]),
               *(fmt(t.get(k)) for k in ("setup_s", "features_s", "probe_s", "score_s")),
               str(t.get("threads", "-"))]
        total += r["wall"]
        if args.baseline:
            b = results["baseline"][task]["wall"]
            base_total += b
            row += [fmt(b), f"**{b / r['wall']:.2f}x**"]
        body.append(row)
    if suite_wall is not None:  # the cells overlapped: the total is the command's wall time
        body.append(["sum of the cells", "", "", "", f"{total / 60:.1f} min", "", "", "", "", ""])
        total = suite_wall
    total_row = ["**total**", "", "", "", f"**{total / 60:.1f} min**", "", "", "", "", ""]
    if args.baseline:
        total_row += [f"{base_total / 60:.1f} min", f"**{base_total / total:.2f}x**"]
    body.append(total_row)
    print()
    print(table(header, body))
    print()
    if args.jobs:
        print(f"- `run.py suite={args.suite}` with {args.jobs} cells at a time: a task's wall is "
              "the sum of its row's stages (train.py's clock), the total the command's wall time")
    else:
        print("- wall: the child run.py (its setup reads the corpus and loads the upstream); "
              "the stages are train.py's own clock (the row's timing_json)")
    print(f"- load average at the end (1, 5, 15 min): {load_average()}")


if __name__ == "__main__":
    main()
