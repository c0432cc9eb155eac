"""The one JSON reader of vis_eval: annotation files, results files and zipped submissions (no torch).

Zip rule: a file that is a zip archive (recognised by its content, whatever its name) is read
through its single ``.json`` member at the archive root, e.g. the ``results.json`` the YouTube-VIS
servers expect; an archive with no such member, or with several, is refused. Members in folders
(``__MACOSX/...``) are ignored.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["gc_paused", "read_json"]


def _zip_json_member(path: str) -> tuple[str, bytes]:
    """(member name, bytes) of the single root-level ``.json`` member of the zip archive ``path``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            members = [n for n in names if n.lower().endswith(".json") and "/" not in n]
            if len(members) != 1:
                found = "none" if not members else ", ".join(members)
                raise ValueError(
                    f"{path}: a zip archive must hold exactly one .json file at its root "
                    f"(e.g. results.json); found {found} among {names[:5]}"
                )
            return members[0], zf.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise ValueError(f"{path}: corrupt zip archive ({e})") from e


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block (restored after it, as it was).

    Building many containers (JSON parsing, the evaluation's per-mask dicts) otherwise triggers
    full collections that traverse every object already loaded: seconds on a large results file.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(data: str | bytes) -> Any:
    """``json.loads`` with the garbage collector paused (millions of small objects, no cycles)."""
    with gc_paused():
        return json.loads(data)


def read_json(path: str | os.PathLike) -> Any:
    """Parse the JSON file ``path``, or the JSON member of a zip archive (see the zip rule above).

    URLs (``scheme://...``) are opened with Detectron2's ``PathManager`` (imported only then).
    Raises FileNotFoundError for a missing file and ValueError for malformed JSON or archives.
    """
    path = os.fspath(path)
    source = path
    if "://" in path:
        from detectron2.utils.file_io import PathManager

        with PathManager.open(path, "r") as f:
            data: str | bytes = f.read()
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"JSON file not found: {path}")
    elif zipfile.is_zipfile(path):
        member, data = _zip_json_member(path)
        source = f"{path}:{member}"
    else:
        with open(path, "rb") as f:
            data = f.read()
    try:
        return _parse(data)
    except json.JSONDecodeError as e:
        at = "" if e.msg.endswith(" at") else " at"  # "Unterminated string starting at", ...
        raise ValueError(f"{source}: malformed JSON ({e.msg}{at} line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{source}: not UTF-8 text ({e.reason})") from e
