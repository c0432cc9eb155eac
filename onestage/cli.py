"""What every command of onestage-seg shares: config overrides and one-line errors.

Overrides follow Detectron2: trailing ``KEY VALUE`` pairs (as its ``train_net.py``) and ``--opts KEY
VALUE ...`` (as its ``demo.py``) are both accepted by every command (:func:`split_overrides`).
Errors of the user's input (:data:`USER_ERRORS`: a missing or malformed config, an unknown key, a
checkpoint that is missing, corrupt or of another model, an unusable dataset folder, an empty training
set) end the command with one line, ``error: ...``, and exit status 1 (:func:`exit_on_user_error`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from vis_eval.data.synthetic import DatasetRootError

from .checkpoint import CheckpointError
from .config import ConfigError, get_cfg
from .data import EmptyTrainingSetError

__all__ = ["USER_ERRORS", "exit_on_user_error", "split_overrides"]

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CheckpointError,
    FileNotFoundError,
    DatasetRootError,
    EmptyTrainingSetError,
)
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def _top_level_keys() -> set[str]:
    return set(get_cfg().keys())


def split_overrides(argv: Sequence[str], takes_value: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Split ``argv`` into (the command's own arguments, config overrides).

    Overrides are the tokens after ``--opts`` and, before it, the runs of tokens that start with one
    that looks like a config key (upper case, its first part a top-level key of :func:`get_cfg`, e.g.
    ``MODEL.WEIGHTS``; not the value of an option in ``takes_value``) and end before the next
    ``--option``. So ``KEY VALUE`` pairs after ``--input a.jpg b.jpg`` are overrides, not file names.
    Values that start with ``--`` need ``--opts``.
    """
    argv = list(argv)
    opts: list[str] = []
    if "--opts" in argv:
        at = argv.index("--opts")
        argv, opts = argv[:at], argv[at + 1 :]
    top = _top_level_keys() if any(_KEY.match(t) for t in argv) else set()
    own: list[str] = []
    pairs: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if _KEY.match(token) and token.split(".")[0] in top and not (own and own[-1] in takes_value):
            # KEY VALUE pairs up to the next --option or the end
            while i < len(argv) and not argv[i].startswith("--"):
                pairs.append(argv[i])
                i += 1
            continue
        own.append(token)
        i += 1
    return own, pairs + opts


@contextmanager
def exit_on_user_error(command: str) -> Iterator[None]:
    """Turn :data:`USER_ERRORS` raised inside into ``SystemExit("error: <command>: <message>")``."""
    try:
        yield
    except USER_ERRORS as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise SystemExit(f"error: {command}: {message}") from e
