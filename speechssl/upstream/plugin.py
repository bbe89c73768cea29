"""Upstreams from outside the package: ``module.path:ClassName`` and the ``speechssl.upstreams``
entry-point group (Python packaging spec, "Entry points specification"), plus the
command-line rewrite that routes them through the ``upstream=plugin`` recipe."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from pathlib import Path

from speechssl.errors import ConfigError, SpeechSSLError

ENTRY_POINT_GROUP = "speechssl.upstreams"
PLUGIN_RECIPE = "plugin"  # recipes/upstream/plugin.yaml
DOCS = "docs/plug-in.md"


def _check_class(obj, where: str):
    """``obj`` must be a concrete subclass of Upstream; ``where`` names it in errors."""
    from speechssl.upstream.base import Upstream

    if not (inspect.isclass(obj) and issubclass(obj, Upstream)):
        kind = f"class {obj.__module__}.{obj.__qualname__}" if inspect.isclass(obj) else type(obj).__name__
        raise ConfigError(f"upstream {where} is a {kind}, not a subclass of "
                          f"speechssl.upstream.Upstream (see {DOCS})")
    if obj.forward is Upstream.forward:
        raise ConfigError(f"upstream {where}: class {obj.__qualname__} does not implement "
                          f"forward(wavs, lengths) (see {DOCS})")
    return obj


def import_class(spec: str):
    """``"pkg.module:ClassName"`` (``ClassName`` may be dotted) -> the Upstream subclass."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"upstream {spec!r}: expected module.path:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(
                f"upstream {spec!r}: no module named {module_name!r} on the Python path; install "
                f"its package (pip install -e <dir>) or add its directory to PYTHONPATH") from None
        raise SpeechSSLError(f"upstream {spec!r}: importing {module_name!r} failed: {e}") from e
    except Exception as e:
        raise SpeechSSLError(f"upstream {spec!r}: importing {module_name!r} failed: "
                             f"{type(e).__name__}: {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = sorted(n for n, v in vars(module).items()
                           if inspect.isclass(v) and _is_upstream(v) and v.__module__ == module.__name__)
            raise ConfigError(f"upstream {spec!r}: module {module_name!r} has no {attr!r}; "
                              f"upstream classes defined there: {', '.join(found) or '(none)'}")
        obj = getattr(obj, part)
    return _check_class(obj, repr(spec))


def _is_upstream(cls) -> bool:
    from speechssl.upstream.base import Upstream

    return issubclass(cls, Upstream) and cls is not Upstream


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def entry_point_names() -> list[str]:
    """Upstream names that installed packages declare in the ``speechssl.upstreams`` group."""
    return sorted({ep.name for ep in _entry_points()})


def entry_point_class(name: str):
    """The class an installed package registers as ``name``; None when none does."""
    eps = {ep.value: ep for ep in _entry_points() if ep.name == name}
    if not eps:
        return None
    if len(eps) > 1:
        raise ConfigError(f"upstream {name!r} is declared by several installed packages "
                          f"({', '.join(sorted(eps))}); use upstream=module.path:ClassName")
    ep = next(iter(eps.values()))
    try:
        obj = ep.load()
    except Exception as e:
        raise SpeechSSLError(f"upstream {name!r}: loading entry point {ep.value!r} "
                             f"(group {ENTRY_POINT_GROUP}) failed: {type(e).__name__}: {e}") from e
    return _check_class(obj, f"{name!r} (entry point {ep.value})")


def is_plugged(name: str, recipes: Path) -> bool:
    """True for names that have no recipe of their own: module:Class or an entry point."""
    if (recipes / "upstream" / f"{name}.yaml").is_file():
        return False
    return ":" in name or name in entry_point_names()


def _recipe_keys(recipes: Path) -> set[str]:
    import yaml

    return set(yaml.safe_load((recipes / "upstream" / f"{PLUGIN_RECIPE}.yaml").read_text()))


def rewrite_overrides(args: list[str], recipes: Path) -> list[str]:
    """Command-line arguments with ``upstream=<module:Class or entry point>`` turned into
    ``upstream=plugin upstream.name=<...>`` (Hydra only knows yaml recipes), and the plugged
    class's own options ``upstream.KEY=V`` into ``+upstream.KEY=V`` (plugin.yaml lacks them).
    A sweep ``upstream=a:B,c:D`` becomes ``upstream.name=a:B,c:D``; it cannot mix plugged
    and built-in upstreams. Flags and other arguments pass unchanged."""
    out, plugged = [], False
    for arg in args:
        key, eq, value = arg.partition("=")
        if arg.startswith("-") or not eq or key != "upstream" or "(" in value:
            out.append(arg)
            continue
        if value == PLUGIN_RECIPE:  # spelled out: upstream=plugin upstream.name=...
            plugged = True
            out.append(arg)
            continue
        names = [v.strip() for v in value.split(",")]
        kinds = [is_plugged(n, recipes) for n in names]
        if not any(kinds):
            unknown = [n for n in names if not (recipes / "upstream" / f"{n}.yaml").is_file()]
            if unknown:
                recipes_ = sorted(p.stem for p in (recipes / "upstream").glob("*.yaml")
                                  if p.stem != PLUGIN_RECIPE)
                installed = entry_point_names()
                raise ConfigError(
                    f"upstream={unknown[0]}: no such upstream; recipes: {', '.join(recipes_)}"
                    + (f"; installed plug-ins: {', '.join(installed)}" if installed else "")
                    + f"; or your own class as upstream=module.path:ClassName ({DOCS})")
            out.append(arg)
            continue
        if not all(kinds):
            raise ConfigError(f"upstream={value}: a sweep cannot mix built-in upstreams and "
                              f"plugged ones (module:Class, entry points); run two sweeps")
        plugged = True
        out += [f"upstream={PLUGIN_RECIPE}", f"upstream.name={value}"]
    if not plugged:
        return out
    if not any(a.startswith("upstream.name=") for a in out):
        raise ConfigError(f"upstream={PLUGIN_RECIPE} needs upstream.name=module.path:ClassName "
                          f"(or an installed plug-in's name)")
    known = _recipe_keys(recipes)
    return [f"+{a}" if a.startswith("upstream.") and "=" in a
            and a.split("=", 1)[0].split(".")[1] not in known else a for a in out]
