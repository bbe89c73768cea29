"""JSONL manifest reading (validated, paths resolved) and atomic writing."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechssl.atomic import atomic_write_text
from speechssl.errors import ManifestError

__all__ = ["read_manifest", "write_manifest"]

# Expected types of the core fields, checked whenever the field is present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "path": (str,),
    "duration": (int, float),
}


def _check_item(obj: object, where: str, required: Sequence[str]) -> dict:
    """Validate one parsed line; ``where`` is ``<manifest>:<line>`` for messages."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in required:
        if key not in obj:
            raise ManifestError(f"{where}: missing required field {key!r}")
    for key, types in _FIELD_TYPES.items():
        if key not in obj:
            continue
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ManifestError(
                f"{where}: field {key!r} must be {names}, got {type(value).__name__} {value!r}"
            )
    if "duration" in obj:
        duration = float(obj["duration"])
        if not math.isfinite(duration) or duration <= 0:
            raise ManifestError(f"{where}: duration must be > 0 seconds, got {obj['duration']!r}")
        obj["duration"] = duration
    if "id" in obj and not obj["id"]:
        raise ManifestError(f"{where}: field 'id' is empty")
    if "path" in obj and not obj["path"]:
        raise ManifestError(f"{where}: field 'path' is empty")
    return obj


def read_manifest(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    required: Sequence[str] = ("id", "path", "duration"),
    check_files: bool = True,
) -> list[dict]:
    """Read and validate a JSONL manifest (one JSON object per line, blank lines ignored).

    Each item's ``path`` is resolved to an absolute path string against ``root``
    (default: the directory containing the manifest; absolute paths are kept). The
    1-based line number is stored in ``item["_line"]`` and the manifest path in
    ``item["_manifest"]``.

    Args:
        path: the manifest file.
        root: corpus root directory that relative audio paths are resolved against.
        required: fields every item must have.
        check_files: if True, every resolved audio path must be an existing file.

    Returns:
        The items in file order.

    Raises:
        ManifestError: naming ``<path>:<line>`` for invalid JSON, a non-object, a missing
            field, a wrong type, a non-positive duration, a duplicate id or a missing audio
            file; naming ``<path>`` for a missing, undecodable or empty manifest.
    """
    manifest = os.fspath(path)
    if not os.path.isfile(manifest):
        raise ManifestError(f"{manifest}: manifest file not found")
    base = Path(root) if root is not None else Path(manifest).parent
    try:
        with open(manifest, encoding="utf-8") as f:
            lines = f.read().split("\n")  # not splitlines(): U+2028 may sit inside strings
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest}: cannot read manifest ({exc})") from exc

    items: list[dict] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        item = _check_item(obj, where, required)
        if "id" in item:
            first = seen.setdefault(item["id"], lineno)
            if first != lineno:
                raise ManifestError(
                    f"{where}: duplicate id {item['id']!r} (first at {manifest}:{first})"
                )
        if "path" in item:
            audio = os.path.abspath(os.path.join(base, item["path"]))
            if check_files and not os.path.isfile(audio):
                raise ManifestError(f"{where}: audio file not found: {audio}")
            item["path"] = audio
        item["_line"] = lineno
        item["_manifest"] = manifest
        items.append(item)
    if not items:
        raise ManifestError(f"{manifest}: manifest has no items")
    return items


def write_manifest(path: str | os.PathLike, items: Iterable[dict]) -> None:
    """Write ``items`` as JSONL (sorted keys) atomically (temp file + rename).

    Keys starting with ``"_"`` are dropped; ``path`` is written exactly as given.
    Parent directories are created.
    """
    dest = Path(path)
    lines = []
    for item in items:
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        lines.append(json.dumps(public, sort_keys=True, ensure_ascii=False) + "\n")
    atomic_write_text(dest, "".join(lines))
