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
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["gc_paused", "json_list_cuts", "json_list_piece", "read_bytes", "read_json"]


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


def read_bytes(path: str | os.PathLike) -> tuple[str, bytes]:
    """(name for messages, bytes) of a local JSON file or of the JSON member of a zip archive."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"JSON file not found: {path}")
    if zipfile.is_zipfile(path):
        member, data = _zip_json_member(path)
        return f"{path}:{member}", data
    with open(path, "rb") as f:
        return path, f.read()


def _holds_keys(data: bytes, start: int, keys: tuple[str, ...]) -> bool:
    """Whether the JSON value at ``data[start:]`` is an object with all ``keys`` (parsed alone)."""
    decoder = json.JSONDecoder()
    size = 1 << 16
    while True:
        try:
            value, _ = decoder.raw_decode(data[start : start + size].decode("utf-8", "replace"))
        except ValueError:  # cut short by the window, or not JSON
            if start + size >= len(data):
                return False
            size *= 4
            continue
        return isinstance(value, dict) and all(k in value for k in keys)


def json_list_cuts(data: bytes, n: int, keys: tuple[str, ...]) -> list[tuple[int, int]]:
    """Up to ``n - 1`` places to cut the JSON list of objects ``data`` into pieces, the first after
    each ``k/n`` point of the text: (end of the element before, start of the one after).

    A cut is a ``}`` and ``,`` followed by an object that starts with one of ``keys`` and holds
    them all (nested objects normally do not). Whether it really lies between elements of the
    list is proven by :func:`json_list_piece`.
    """
    first = b"|".join(re.escape(key.encode()) for key in keys)
    boundary = re.compile(rb'\}\s*,\s*(?=\{\s*"(?:' + first + rb')"\s*:)')
    cuts: list[tuple[int, int]] = []
    for j in range(1, n):
        pos = max(len(data) * j // n, cuts[-1][1] if cuts else 0)
        m = next((m for m in boundary.finditer(data, pos) if _holds_keys(data, m.end(), keys)), None)
        if m is None:
            break
        cuts.append((m.start() + 1, m.end()))
    return cuts


def json_list_piece(data: bytes, cuts: list[tuple[int, int]], k: int) -> list | None:
    """Piece ``k`` of the JSON list ``data`` cut at ``cuts`` (:func:`json_list_cuts`): its elements
    from cut ``k - 1`` to cut ``k``, or None when that text does not parse as a list.

    Piece ``k`` parsing proves that its end cut lies between top-level elements (the parser's
    state there is the whole text's), so when pieces ``0 .. len(cuts)`` all parse, together they
    are exactly the text's list, in order.
    """
    end = cuts[k][0] if k < len(cuts) else len(data)
    text = data[:end] if k == 0 else b"[" + data[cuts[k - 1][1] : end]
    if k < len(cuts):
        text += b"]"
    try:
        piece = _parse(text)
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return None
    return piece if isinstance(piece, list) else None


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
    else:
        source, data = read_bytes(path)
    try:
        return _parse(data)
    except json.JSONDecodeError as e:
        at = "" if e.msg.endswith(" at") else " at"  # "Unterminated string starting at", ...
        raise ValueError(f"{source}: malformed JSON ({e.msg}{at} line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{source}: not UTF-8 text ({e.reason})") from e
