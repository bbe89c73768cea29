"""A non-editable install (`pip install .`) ships the code, the tasks and the recipes: built
into a temporary directory and run from another one, with the checkout not importable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl import store

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "speechssl", "downstream", "recipes"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """`pip install --target` of a copy of the source tree (the build writes build/ and
    *.egg-info into the tree it builds; a stale build/ in the checkout is not shipped)."""
    tmp = tmp_path_factory.mktemp("install")
    src, site = tmp / "src", tmp / "site"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--no-compile", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return site


def installed_env(site: Path) -> dict[str, str]:
    """The installed copy first on sys.path (PYTHONPATH is searched before the editable
    install's finder, which sys.meta_path consults last)."""
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}


def test_every_module_and_recipe_is_installed(site):
    """`packages` in pyproject.toml is a list: a package left out of it is not shipped."""
    wanted = [p.relative_to(ROOT) for d in ("speechssl", "downstream")
              for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]
    missing = [str(p) for p in wanted if not (site / p).is_file()]
    recipes = [p.relative_to(ROOT / "recipes") for p in (ROOT / "recipes").rglob("*.yaml")]
    missing += [f"recipes/{p}" for p in recipes if not (site / "speechssl" / "recipes" / p).is_file()]
    assert not missing, f"not installed (add the package to pyproject.toml): {missing}"
    assert (site / "bin" / "speechssl").is_file()  # the console script


def test_installed_package_runs_a_cell_from_another_directory(site, data_dir, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = installed_env(site)
    where = subprocess.run(
        [sys.executable, "-c", "import speechssl, speechssl.cli, downstream\n"
         "from speechssl.config import RECIPES\n"
         "print(speechssl.__file__, speechssl.cli.__file__, downstream.__file__, RECIPES)"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    paths = [Path(p) for p in where.stdout.split()]
    assert all(p.is_relative_to(site) for p in paths), (paths, site)  # not the checkout
    assert (paths[-1] / "config.yaml").is_file()

    out_dir = tmp_path / "out"
    cell = subprocess.run(
        [sys.executable, "-m", "speechssl", "upstream=fbank", "downstream=ks", "corpus.size=tiny",
         f"data_dir={data_dir}", f"out_dir={out_dir}", "downstream.optim.max_steps=6",
         "downstream.optim.eval_every=3", "progress=false", "device=cpu"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert cell.returncode == 0, cell.stdout[-2000:] + cell.stderr[-3000:]
    assert "test accuracy" in cell.stdout and "| upstream | ks (accuracy) |" in cell.stdout
    (row,) = store.rows(out_dir / "leaderboard.sqlite")
    assert (row["upstream"], row["task"]) == ("fbank", "ks")
    assert list(out_dir.glob("hydra/*/.hydra/config.yaml"))  # Hydra's output dir
    assert not list(work.iterdir())  # nothing written into the working directory


def test_installed_console_script_composes_the_config(site, tmp_path):
    """`speechssl ...` and `python -m speechssl ...` of the installed copy take run.py's
    Hydra overrides and compose the very config `python run.py ...` of the checkout does."""
    args = ["--cfg", "job", "upstream=apc", "downstream=pr", "downstream.optim.lr=0.003",
            f"out_dir={tmp_path}"]
    runs = {name: subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True,
                                 timeout=120)
            for name, cmd, cwd, env in [
                ("speechssl", [str(site / "bin" / "speechssl")], tmp_path, installed_env(site)),
                ("python -m speechssl", [sys.executable, "-m", "speechssl"], tmp_path,
                 installed_env(site)),
                ("run.py", [sys.executable, str(ROOT / "run.py")], ROOT, os.environ)]}
    for name, out in runs.items():
        assert out.returncode == 0, f"{name}: {out.stderr[-2000:]}"
    out = runs["speechssl"].stdout
    assert "name: apc" in out and "mode: train" in out and "lr: 0.003" in out
    assert runs["python -m speechssl"].stdout == out
    assert runs["run.py"].stdout == out
    bad = subprocess.run([str(site / "bin" / "speechssl"), "downstream=nope"], cwd=tmp_path,
                         env=installed_env(site), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "downstream=nope: no such downstream" in bad.stderr
