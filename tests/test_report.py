"""Leaderboard aggregation (dev selection, seeds, folds), the SUPERB score worked by hand,
CSV, PNG plots, the self-contained HTML page, and the page in a real headless browser."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from speechssl import plots, report, score
from speechssl.errors import ConfigError

SUITE = score.load_suite("superb")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(upstream, task, test, dev=None, *, metric="accuracy", hib=True, seed=0, lr=1e-3,
        fold=None, corpus="synth-tiny-seed0", extra=None, layer_weights=None, run_dir=None):
    """One store row as train.py writes it (config_yaml holds the downstream config)."""
    down = {"name": task, "optim": {"lr": lr, "max_steps": 10}}
    if fold is not None:
        down["fold"] = fold
    dev = test if dev is None else dev
    return {
        "run_id": f"{upstream}/{task}/{corpus}/seed{seed}-lr{lr}-f{fold}",
        "upstream": upstream, "weights_hash": f"w-{upstream}", "task": task, "corpus": corpus,
        "metric": metric, "higher_is_better": int(hib), "dev_value": dev, "test_value": test,
        "metrics_json": json.dumps({"dev": {metric: dev}, "test": {metric: test, **(extra or {})}}),
        "seed": seed, "config_yaml": yaml.safe_dump({"seed": seed, "downstream": down}),
        "layer_weights": json.dumps(layer_weights or [1.0]), "run_dir": run_dir,
        "wall_time_s": 1.0}


def cell(cells, upstream, task, corpus="synth-tiny-seed0"):
    (c,) = [c for c in cells if (c.upstream, c.task, c.corpus) == (upstream, task, corpus)]
    return c


# ---------------------------------------------------------------- aggregation


def test_dev_best_lr_wins_and_its_test_value_is_reported():
    rows = [run("apc", "ks", test=80.0, dev=60.0, lr=1e-2),   # best test, worse dev
            run("apc", "ks", test=70.0, dev=65.0, lr=1e-3),   # best dev: this one wins
            run("apc", "ks", test=50.0, dev=40.0, lr=1e-4)]
    c = cell(score.aggregate(rows), "apc", "ks")
    assert (c.test, c.dev, c.n_variants) == (70.0, 65.0, 3)
    assert c.choice == "optim.lr=0.001"
    assert "70.00 (best on dev: optim.lr=0.001)" in report.markdown_table(rows, suite=SUITE)


def test_lower_is_better_selects_the_lowest_dev():
    rows = [run("apc", "pr", test=30.0, dev=35.0, metric="per", hib=False, lr=1e-2),
            run("apc", "pr", test=40.0, dev=20.0, metric="per", hib=False, lr=1e-3)]
    assert cell(score.aggregate(rows), "apc", "pr").test == 40.0


def test_without_dev_the_test_value_selects_and_the_table_says_so():
    rows = [run("apc", "qbe", 5.0, metric="mtwv", lr=1e-2), run("apc", "qbe", 7.0, metric="mtwv")]
    for r in rows:
        r["dev_value"], r["metrics_json"] = None, json.dumps({"test": {"mtwv": r["test_value"]}})
    c = cell(score.aggregate(rows), "apc", "qbe")
    assert c.test == 7.0 and c.dev is None and c.selected_on == "test"
    assert report.format_value(c) == "7.00 (best on test, no dev score: optim.lr=0.001)"


def test_mean_and_sample_std_over_seeds():
    values = [61.0, 64.0, 70.0]
    rows = [run("apc", "ks", v, seed=s) for s, v in enumerate(values)]
    c = cell(score.aggregate(rows), "apc", "ks")
    assert c.n_seeds == 3 and c.n_variants == 1
    assert c.test == pytest.approx(statistics.mean(values))
    assert c.test_std == pytest.approx(statistics.stdev(values))  # (n - 1) denominator
    assert report.format_value(c) == "65.00 ± 4.58 (3 seeds)"


def test_er_folds_are_averaged_into_one_cell_per_seed():
    rows = [run("apc", "er", v, fold=f, seed=s)
            for s, fold_values in enumerate([[50.0, 60.0, 70.0], [40.0, 50.0, 60.0]])
            for f, v in enumerate(fold_values, start=1)]
    c = cell(score.aggregate(rows), "apc", "er")
    # seed 0: mean 60, seed 1: mean 50 -> 55 ± stdev(60, 50)
    assert (c.n_folds, c.n_seeds, c.n_variants) == (3, 2, 1)
    assert c.test == pytest.approx(55.0) and c.test_std == pytest.approx(statistics.stdev([60, 50]))


def test_a_fold_counts_once():
    """Issue 24: a run with fold=null beside runs of folds 1..5 (before null meant all five,
    it read fold 1) is fold 1, not a sixth fold; a fold run twice counts its latest run."""
    rows = [run("apc", "er", v, fold=f) for f, v in enumerate([50.0, 60, 70, 80, 90], start=1)]
    old = {**run("apc", "er", 20.0), "timestamp": 1.0}  # fold=null: read fold 1
    for r in rows:
        r["timestamp"] = 2.0
    c = cell(score.aggregate([old, *rows]), "apc", "er")
    assert c.n_folds == 5 and c.test == pytest.approx(70.0)  # not (20 + 350) / 6 = 61.67
    again = {**run("apc", "er", 100.0, fold=3), "run_id": "rerun", "timestamp": 3.0}
    c = cell(score.aggregate([old, *rows, again]), "apc", "er")
    assert c.n_folds == 5 and c.test == pytest.approx(76.0)  # fold 3: 100 replaces 70


# ---------------------------------------------------------------- the SUPERB score


def test_published_points_scored_by_hand():
    corpus = "librispeech"  # any non-synth corpus gets the published SUPERB points
    rows = [
        run("apc", "pr", 42.77, metric="per", hib=False, corpus=corpus),  # 82.01 - 0.5 * 78.48
        run("apc", "ks", 55.20, corpus=corpus),                            # 41.38 + 0.25 * 55.28
        # SF: F1 at 3/4 of 69.64 -> 89.81, CER at 1/4 of 52.94 -> 21.76: (750 + 250) / 2
        run("apc", "sf", 84.7675, metric="slot_type_f1", corpus=corpus,
            extra={"slot_value_cer": 45.145}),
        run("apc", "pos", 90.0, corpus=corpus),                            # no reference points
    ]
    cells = score.aggregate(rows)
    s = score.superb_scores(cells, SUITE, corpus)
    assert s.task[("apc", "pr")] == pytest.approx(500.0)
    assert s.task[("apc", "ks")] == pytest.approx(250.0)
    assert s.task[("apc", "sf")] == pytest.approx(500.0)
    assert ("apc", "pos") not in s.task
    assert s.upstream["apc"] == pytest.approx((500 + 250 + 500) / 3) and s.n_tasks["apc"] == 3
    assert any("no reference points" in n and "pos" in n for n in s.notes)
    table = report.markdown_table(rows, suite=SUITE)
    assert "| 417 (3/10 tasks) |" in table and "pos (accuracy)" in table


def test_scale_is_linear_and_unclipped_for_both_directions():
    assert score.scaled(96.66, 41.38, 96.66) == pytest.approx(1000.0)
    assert score.scaled(41.38, 41.38, 96.66) == pytest.approx(0.0)
    assert score.scaled(2.0, 10.0, 6.0) == pytest.approx(2000.0)  # lower better, past top
    assert score.scaled(12.0, 10.0, 6.0) == pytest.approx(-500.0)


def test_synth_baseline_is_the_measured_fbank_run():
    rows = [run("fbank", "ks", 40.0), run("apc", "ks", 70.0),
            run("fbank", "pr", 80.0, metric="per", hib=False),
            run("apc", "pr", 20.0, metric="per", hib=False), run("apc", "ic", 90.0)]
    s = score.superb_scores(score.aggregate(rows), SUITE, "synth-tiny-seed0")
    assert s.task[("apc", "ks")] == pytest.approx(1000 * 30 / 60)   # topline 100 %
    assert s.task[("apc", "pr")] == pytest.approx(1000 * 60 / 80)   # topline 0 %
    assert s.task[("fbank", "ks")] == pytest.approx(0.0)
    assert ("apc", "ic") not in s.task  # no fbank x ic run: no baseline
    assert any("no fbank run" in n and "ic" in n for n in s.notes)
    assert s.upstream["apc"] == pytest.approx(625.0) and s.n_tasks["apc"] == 2


def test_corpus_without_reference_points_is_shown_not_scored():
    suite = {"name": "only-synth", "tasks": ["ks"],
             "references": [{"corpus": "synth-*", "points": {
                 "ks": {"accuracy": {"baseline": "fbank", "topline": 100.0}}}}]}
    rows = [run("apc", "ks", 70.0, corpus="mycorpus")]
    table = report.markdown_table(rows, suite=suite)
    assert "| apc | 70.00 | n/a |" in table and "no reference points for corpus mycorpus" in table


@pytest.mark.parametrize("bad,match", [
    ({"name": "x", "tasks": []}, "suite.tasks must be a non-empty list"),
    ({"name": "x", "tasks": ["ks"], "references": [{"corpus": "*", "points": {
        "ks": {"accuracy": {"baseline": "mfcc", "topline": 1}}}}]},
     r"points\.ks\.accuracy\.baseline must be a number or 'fbank'"),
    ({"name": "x", "tasks": ["ks"], "references": [{"corpus": "*", "points": {
        "ks": {"accuracy": {"baseline": 1.0}}}}]}, r"points\.ks\.accuracy\.topline"),
    ({"name": "x", "tasks": ["ks"], "references": [{"points": {}}]}, r"references\[0\]\.corpus"),
])
def test_bad_suite_values_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        score.check_suite(bad)


def test_unknown_suite_is_named():
    with pytest.raises(ConfigError, match="suite=nosuch"):
        score.load_suite("nosuch")


def test_superb_yaml_has_the_published_points():
    ref = score.reference_for(SUITE, "librispeech")
    assert ref["points"]["pr"]["per"] == {"baseline": 82.01, "topline": 3.53}
    assert ref["points"]["sf"]["slot_value_cer"] == {"baseline": 52.94, "topline": 21.76}
    assert score.reference_for(SUITE, "synth-default-seed0")["points"]["ks"][
        "accuracy"]["baseline"] == "fbank"
    assert len(SUITE["tasks"]) == 10


# ---------------------------------------------------------------- CSV, plots, HTML


def _tb_run(tmp_path: Path, name: str) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "runs" / name
    w = SummaryWriter(str(run_dir / "tb"))
    for step in range(1, 11):
        w.add_scalar("train/loss", 10.0 / step, step)
    for step in (5, 10):
        w.add_scalar("dev/accuracy", 5.0 * step, step)
    w.close()
    return run_dir


def test_tensorboard_scalars_are_read_back(tmp_path):
    series = plots.read_tb_scalars(_tb_run(tmp_path, "a") / "tb")
    assert series["train/loss"][0] == list(range(1, 11))
    assert series["train/loss"][1][-1] == pytest.approx(1.0)
    assert series["dev/accuracy"] == ([5, 10], [25.0, 50.0])
    assert plots.read_tb_scalars(tmp_path / "missing") == {}


def _sample_store(tmp_path):
    return [run("fbank", "ks", 40.0, run_dir=str(_tb_run(tmp_path, "fbank-ks"))),
            run("apc", "ks", 70.0, layer_weights=[0.2, 0.5, 0.3],
                run_dir=str(_tb_run(tmp_path, "apc-ks"))),
            run("apc", "ks", 74.0, seed=1, layer_weights=[0.4, 0.3, 0.3]),
            run("apc", "pr", 30.0, metric="per", hib=False, layer_weights=[0.1, 0.1, 0.8]),
            run("fbank", "pr", 80.0, metric="per", hib=False)]


def test_csv_matches_the_cells(tmp_path):
    paths = report.write_report(_sample_store(tmp_path), SUITE, tmp_path / "lb", curves=False)
    with paths["cells_csv"].open() as f:
        got = {(r["upstream"], r["task"]): r for r in csv.DictReader(f)}
    apc_ks = got[("apc", "ks")]
    assert float(apc_ks["test_mean"]) == pytest.approx(72.0)
    assert float(apc_ks["test_std"]) == pytest.approx(statistics.stdev([70.0, 74.0]))
    assert int(apc_ks["n_seeds"]) == 2 and apc_ks["metric"] == "accuracy"
    assert float(apc_ks["task_score"]) == pytest.approx(1000 * 32 / 60)
    with paths["scores_csv"].open() as f:
        scores = {r["upstream"]: float(r["superb_score"]) for r in csv.DictReader(f)}
    assert scores["apc"] == pytest.approx((1000 * 32 / 60 + 1000 * 50 / 80) / 2)
    assert scores["fbank"] == pytest.approx(0.0)


def _png_size(png: bytes) -> tuple[int, int]:
    import matplotlib.image

    assert png.startswith(PNG_MAGIC)
    h, w = matplotlib.image.imread(io.BytesIO(png)).shape[:2]
    return w, h


def test_smooth_is_a_debiased_moving_average():
    # hand-worked: weight 0.5 -> 0.5 / (1 - 0.5) = 1, then (0.25 + 1.5) / (1 - 0.25) = 7/3
    assert plots.smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, 7 / 3])
    assert plots.smooth([2.0] * 50, 0.9) == pytest.approx([2.0] * 50)  # no pull towards 0
    assert plots.smooth([1.0, 5.0], 0.0) == [1.0, 5.0]
    with pytest.raises(ValueError, match="smoothing weight"):
        plots.smooth([1.0], 1.0)


def test_plots_are_pngs():
    assert min(_png_size(plots.layer_weights_png(["a / ks", "b / ks"], [[0.5, 0.5], [1.0]], "t")))
    assert min(_png_size(plots.curves_png(([1, 2], [3.0, 2.0]), {"per": ([2], [50.0])}, "t")))
    assert min(_png_size(plots.runs_curves_png({"a": {"train": ([1, 2], [3.0, 2.0]),
                                                      "dev": ([2], [50.0])}}, "per", "t")))
    assert min(_png_size(plots.score_bars_png({"apc": 500.0, "fbank": 0.0}, "t")))
    with pytest.raises(ValueError, match="one weight list per label"):
        plots.layer_weights_png(["a"], [], "t")


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.links, self.cells, self.table = [], [], {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))
        if tag == "table":
            self.table = a.get("class")
        if tag == "td":
            self.cells[self.table] = self.cells.get(self.table, 0) + 1


def test_html_is_self_contained_with_table_and_plots(tmp_path):
    paths = report.write_report(_sample_store(tmp_path), SUITE, tmp_path / "lb")
    page = _Images()
    page.feed(paths["html"].read_text())
    assert page.cells["leaderboard"] == 2 * 4  # 2 upstreams x (name, ks, pr, score)
    assert page.cells["scores"] == 4 * 3  # (upstream, task, score) of the 4 scored cells
    assert all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert all(link.startswith("data:") for link in page.links)  # no external asset
    # score bars, layer weights, curves of the two runs that have TensorBoard logs
    assert len(page.srcs) == 4
    for src in page.srcs:
        assert min(_png_size(base64.b64decode(src.split(",", 1)[1])))
    out = tmp_path / "lb"
    assert (out / "score_synth-tiny-seed0.png").is_file()
    assert (out / "layer_weights_synth-tiny-seed0.png").is_file()
    assert len(list((out / "curves").glob("*.png"))) == 2
    md = paths["markdown"].read_text()
    assert "| apc | 72.00 ± 2.83 (2 seeds) | 30.00 |" in md


def _chromium() -> tuple[str, str] | None:
    for browser in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(browser)
        if path and shutil.which("chromedriver"):
            return path, shutil.which("chromedriver")
    return None


def test_html_renders_in_headless_chromium(tmp_path):
    found = _chromium()
    if found is None:
        if os.environ.get("SPEECHSSL_REQUIRE_BROWSER") == "1":
            pytest.fail("SPEECHSSL_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed")
        pytest.skip("chromium + chromium-driver not installed (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = report.write_report(_sample_store(tmp_path), SUITE, tmp_path / "lb")
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        driver.get(paths["html"].resolve().as_uri())
        rows = driver.execute_script(
            "return [...document.querySelectorAll('table.leaderboard tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))")
        widths = driver.execute_script(
            "return [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    finally:
        driver.quit()
    assert [r[0] for r in rows] == ["apc", "fbank"]
    assert rows[0][1].startswith("72.00")
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    assert errors == []


def test_layer_weights_of_a_cell_are_averaged_over_its_runs(tmp_path):
    rows = [run("apc", "ks", 70.0, layer_weights=[0.2, 0.5, 0.3]),
            run("apc", "ks", 74.0, seed=1, layer_weights=[0.4, 0.3, 0.3]),
            run("apc", "pr", 30.0, metric="per", hib=False)]
    rows[2]["layer_weights"] = None  # an old row without weights: no heat-map row
    cells = score.aggregate(rows)
    assert report.cell_layer_weights(cell(cells, "apc", "ks")) == pytest.approx([0.3, 0.4, 0.3])
    assert report.cell_layer_weights(cell(cells, "apc", "pr")) is None


def test_unconverged_cells_are_marked():
    rows = [{**run("fbank", "ks", test=50.0), "converged": 1},
            {**run("apc", "ks", test=60.0), "converged": 0},
            run("mfcc", "ks", test=40.0)]  # a row from before the column: not marked
    table = report.markdown_table(rows, suite=SUITE)
    assert "| 60.00 † |" in table and "| 50.00 |" in table and "| 40.00 |" in table
    assert "† not converged" in table
    assert cell(score.aggregate(rows), "apc", "ks").converged is False
    assert cell(score.aggregate(rows), "mfcc", "ks").converged is None
