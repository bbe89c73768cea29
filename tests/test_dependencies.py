"""Dependencies say the truth: every third-party import of speechssl/ and downstream/ is a
core dependency of pyproject.toml, or an extra's, imported so that its absence is one line
naming the extra (speechssl.extras.require, or a try/except ImportError); every core
dependency is imported somewhere; and every module of the two packages imports with only the
core install (the extras' and the dev tools' packages hidden), where the optional pieces
name their extra.

The import scan reads the source (imports inside functions count); the core-install run
imports every module in a subprocess where each top-level module that no core dependency
brings, directly or through its own requirements, is set to None in sys.modules."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("speechssl", "downstream")
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def norm(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core dependency names, {extra: names}) of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {norm(Requirement(r).name) for r in project["dependencies"]}
    extras = {extra: {norm(Requirement(r).name) for r in reqs}
              for extra, reqs in project["optional-dependencies"].items()}
    return core, extras


def distributions_of_modules() -> dict[str, set[str]]:
    """Top-level module -> the installed distributions that provide it."""
    return {mod: {norm(d) for d in dists} for mod, dists in md.packages_distributions().items()}


def source_files(roots=None) -> list[Path]:
    roots = roots or [ROOT / p for p in PACKAGES]
    return sorted(p for r in roots for p in r.rglob("*.py") if "__pycache__" not in p.parts)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in IMPORT_ERRORS for t in types)


def scan(path: Path) -> tuple[list[tuple[int, str, bool]], list[tuple[int, str, str]]]:
    """Absolute imports of a file as (line, module, guarded by an except ImportError), and its
    ``require("module", "extra", ...)`` calls as (line, module, extra)."""
    imports, requires = [], []

    def visit(node, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, guarded or catches)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            imports.extend((node.lineno, a.name, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imports.append((node.lineno, node.module, guarded))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            args = [a.value for a in node.args[:2] if isinstance(a, ast.Constant)]
            if name == "require" and len(args) == 2 and all(isinstance(a, str) for a in args):
                requires.append((node.lineno, args[0], args[1]))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(path.read_text(), str(path)), False)
    return imports, requires


def third_party(module: str) -> str | None:
    """The top-level name of ``module`` if it is neither the standard library nor ours."""
    top = module.split(".")[0]
    return None if top in sys.stdlib_module_names or top in PACKAGES else top


def undeclared(files: list[Path]) -> tuple[list[str], set[str]]:
    """(one line per import pyproject.toml does not account for, the distributions the
    files import)."""
    core, extras = declared()
    optional = set().union(*(names for extra, names in extras.items() if extra != "dev"))
    providers = distributions_of_modules()
    problems, used = [], set()
    for path in files:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        imports, requires = scan(path)
        for line, module, guarded in imports:
            top = third_party(module)
            if top is None:
                continue
            dists = providers.get(top, set())
            used |= dists
            if dists & core:
                continue
            if not dists:
                problems.append(f"{where}:{line}: import {module}: no installed distribution "
                                f"provides it, so pyproject.toml cannot declare it")
            elif guarded and dists & optional:
                continue
            elif dists & optional:
                problems.append(f"{where}:{line}: import {module} ({', '.join(sorted(dists))}, "
                                f"an extra) outside try/except ImportError: use "
                                f"speechssl.extras.require so its absence names the extra")
            else:
                problems.append(f"{where}:{line}: import {module} ({', '.join(sorted(dists))}) "
                                f"is not a core dependency of pyproject.toml")
        for line, module, extra in requires:
            dists = providers.get(module.split(".")[0], set())
            used |= dists
            if not dists & extras.get(extra, set()):
                problems.append(f"{where}:{line}: require({module!r}, {extra!r}): "
                                f"{', '.join(sorted(dists)) or 'nothing installed'} is not in "
                                f"pyproject.toml's extra {extra!r}")
    return problems, used


def test_every_third_party_import_is_declared():
    problems, _ = undeclared(source_files())
    assert not problems, "\n".join(problems)


# Hydra launcher plugins are loaded by Hydra from a recipe's defaults, never imported by us
PLUGIN_OF_LAUNCHER = {"joblib": "hydra-joblib-launcher", "submitit_local": "hydra-submitit-launcher",
                      "submitit_slurm": "hydra-submitit-launcher"}


def launcher_plugins() -> set[str]:
    """The distributions of the Hydra launchers that recipes/hydra/launcher/ names."""
    import yaml

    used = set()
    for recipe in (ROOT / "recipes" / "hydra" / "launcher").glob("*.yaml"):
        for entry in yaml.safe_load(recipe.read_text()).get("defaults", []):
            assert entry in PLUGIN_OF_LAUNCHER, f"{recipe.name}: which package is {entry!r}?"
            used.add(PLUGIN_OF_LAUNCHER[entry])
    return used


def test_every_declared_dependency_is_imported():
    """No dependency is installed for nothing (librosa was): each core dependency and each
    extra's package is imported by speechssl/ or downstream/."""
    core, extras = declared()
    _, used = undeclared(source_files())
    used |= launcher_plugins()
    unused = sorted(core - used)
    assert not unused, f"declared in pyproject.toml but never imported: {unused}"
    for extra, names in extras.items():
        if extra != "dev":
            assert names <= used, f"extra {extra!r}: {sorted(names - used)} never imported"


def test_the_check_flags_undeclared_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\nimport jinja2\n\n\ndef f():\n    import pytest\n"
                   "    from speechssl.extras import require\n"
                   "    require('transformers', 'beam', 'x')\n"
                   "    try:\n        import transformers\n    except ImportError:\n"
                   "        raise\n    import transformers.models\n")
    problems, used = undeclared([bad])
    assert {"numpy", "jinja2", "pytest", "transformers"} <= used
    # jinja2 (only through torch), pytest (dev only), transformers unguarded and required
    # from the wrong extra; numpy and the guarded transformers import pass
    expected = ["bad.py:2: import jinja2 (jinja2) is not a core dependency",
                "bad.py:6: import pytest (pytest) is not a core dependency",
                "bad.py:13: import transformers.models (transformers, an extra) outside try",
                "bad.py:8: require('transformers', 'beam'): transformers is not in"]
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(f"{tmp_path}/{start}"), problem


def test_extras_table_matches_pyproject():
    from speechssl.extras import EXTRAS, install_hint

    _, extras = declared()
    for extra, (dists, _) in EXTRAS.items():
        assert {norm(d) for d in dists} == extras[extra], extra
        assert extras[extra] <= extras["dev"], f"the dev extra must install {extra}'s packages"
        assert f'"speechssl[{extra}]"' in install_hint(extra)
    assert set(extras) - {"dev"} == set(EXTRAS)


# Runs in a subprocess with the non-core modules set to None in sys.modules: imports every
# module of the packages, then calls the optional pieces and records their errors.
CORE_ONLY = r"""
import importlib, json, sys, traceback
root, hidden, modules = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.path.insert(0, root)
for name in hidden:
    sys.modules.setdefault(name, None)  # what is already loaded at start-up stays
report = {"hidden": [n for n in hidden if sys.modules.get(n, 0) is None], "failed": {},
          "optional": {}}
for name in modules:
    try:
        importlib.import_module(name)
    except BaseException:
        report["failed"][name] = traceback.format_exc(limit=-3)

def attempt(extra, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
        report["optional"][extra] = "no error"
    except BaseException as e:
        report["optional"].setdefault(extra, "")
        report["optional"][extra] += f"{type(e).__name__}: {e}\n"

import tempfile
from pathlib import Path
from downstream.base import build_task
from speechssl.cli import check_launcher
from speechssl.config import RECIPES, check_overrides
from speechssl.text.tokenizer import hf_text_tokenizer, train_wordpiece
model = Path(tempfile.mkdtemp()) / "model"  # a local HuggingFace directory, as far as it goes
model.mkdir()
(model / "config.json").write_text("{}")
attempt("beam", build_task, "asr", decoder="beam")
attempt("hf", hf_text_tokenizer, str(model))
attempt("hf", check_overrides, ["upstream=hf", f"upstream.path={model}", "downstream=ks"])
attempt("slurm", check_launcher, ["hydra/launcher=local"], RECIPES)
attempt("slurm", check_launcher, ["hydra/launcher=slurm"], RECIPES)
report["wordpiece"] = train_wordpiece(["the cat sat", "the dog sat"] * 3, 40).get_vocab_size()
print(json.dumps(report))
"""


def core_closure() -> set[str]:
    """The core dependencies and everything they require (markers evaluated here, no
    extras): what `pip install speechssl` installs."""
    core, _ = declared()
    seen, todo = set(), list(core)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not for this platform
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(norm(r.name))
    return seen


@pytest.fixture(scope="module")
def core_only() -> dict:
    closure = core_closure() | {"speechssl"}
    providers = distributions_of_modules()
    hidden = {mod for mod, dists in providers.items()
              if not dists & closure and third_party(mod) and not mod.startswith("__")}
    # a namespace package that core and optional distributions share (hydra_plugins: the
    # joblib launcher is core, the submitit launcher the slurm extra): hide the optional ones'
    # subpackages
    for mod, dists in providers.items():
        if dists & closure and third_party(mod):
            hidden |= {f"{mod}.{f.parts[1]}" for dist in dists - closure
                       for f in md.files(dist) or [] if len(f.parts) > 2 and f.parts[0] == mod}
    hidden = sorted(hidden)
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in source_files()]
    out = subprocess.run([sys.executable, "-c", CORE_ONLY, str(ROOT), json.dumps(hidden),
                          json.dumps(modules)], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return {**json.loads(out.stdout.splitlines()[-1]), "modules": modules}


def test_every_module_imports_under_the_core_install(core_only):
    # the hiding works: the extras and the test tools are out of reach
    assert {"transformers", "flashlight", "hydra_plugins.hydra_submitit_launcher", "pytest",
            "jiwer", "pyannote"} <= set(core_only["hidden"])
    assert len(core_only["modules"]) > 100 and "speechssl.upstream.hf" in core_only["modules"]
    assert not core_only["failed"], "\n".join(f"{m}:\n{tb}" for m, tb in
                                              core_only["failed"].items())
    assert core_only["wordpiece"] > 5  # tokenizers (upstream=bert's WordPiece) is core


@pytest.mark.parametrize("extra", ["hf", "beam", "slurm"])
def test_optional_pieces_name_their_extra(core_only, extra):
    errors = core_only["optional"][extra].strip().splitlines()
    assert errors and all(e.startswith("ConfigError: ") and f"[{extra}]" in e
                          for e in errors), errors
