"""Worker processes for the evaluation's mask work (no torch).

The mask work (decoding, areas, intersections) is independent per video, so it is split by video
over processes. :class:`ForkedWorkers` forks its children when it is created and lets them run the
caller's code on: a command creates it *before* reading the input files, so each child parses the
files itself, in parallel with the parent, and no memory is shared (with children forked after
the inputs are loaded, reference counting would copy most of the parsed objects' pages, in both
processes). At :meth:`ForkedWorkers.map` each child computes its part, sends it pickled through a
pipe and exits; the parent computes the first part and collects the others.

The code a child runs between the fork and ``map`` must be deterministic and write nothing: the
children's standard output and error go to ``/dev/null``, and a child never leaves the ``with``
block of its pool (it exits in ``map`` or at the end of the block).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

__all__ = ["ForkedWorkers", "can_fork", "default_workers"]

logger = logging.getLogger(__name__)


def can_fork() -> bool:
    """Whether worker processes can be forked here (Linux: ``fork`` is unsafe on macOS once
    system frameworks are loaded, and absent on Windows)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def default_workers(limit: int = 4) -> int:
    """The CPUs this process may use, at most ``limit`` (1 where workers cannot be forked)."""
    if not can_fork():
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, limit))


_exited: list[int] = []  # children that have sent their answer, not reaped yet


def _reap(wait: bool = False) -> None:
    """Reap the children of :data:`_exited` that have ended (``wait``: all of them)."""
    for pid in list(_exited):
        try:
            done, _ = os.waitpid(pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:  # already reaped
            done = pid
        if done:
            _exited.remove(pid)


class ForkedWorkers:
    """This process (rank 0) and ``n - 1`` children forked at creation (ranks 1 .. n-1).

    Use as a context manager around the code that leads to :meth:`map`; with ``n <= 1`` or where
    :func:`can_fork` is False, ``map`` is a plain loop.
    """

    def __init__(self, n: int) -> None:
        self.rank = 0
        self._children: dict[int, tuple[int, int]] = {}  # rank -> (pid, read end of its pipe)
        self._pipe_w = -1
        self.size = 1  # the number of processes, the same in all of them
        _reap()
        if n <= 1 or not can_fork():
            return
        self.size = n
        sys.stdout.flush()
        sys.stderr.flush()
        for rank in range(1, n):
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError as e:  # out of processes or memory: the parent computes that part
                logger.debug("fork failed (%s); computing in this process", e)
                os.close(r)
                os.close(w)
                self.size = rank  # the children forked so far give their parts for the full size:
                break  # they do not match, and the parent computes them all
            if pid == 0:
                self._become_child(rank, w, [r] + [fd for _, fd in self._children.values()])
                return
            os.close(w)
            self._children[rank] = (pid, r)

    def _become_child(self, rank: int, pipe_w: int, inherited: list[int]) -> None:
        self.rank, self._pipe_w, self._children = rank, pipe_w, {}
        for fd in inherited:  # the read ends of the parent's pipes
            os.close(fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)

    @property
    def is_child(self) -> bool:
        return self.rank > 0

    def map(self, fn: Callable[[Any], Any], parts: Sequence[Any], recompute: bool = True) -> list[Any]:
        """``[fn(part) for part in parts]``, part ``k`` computed by the process of rank ``k`` when
        there is one (in a child, this call does not return). A part whose child failed or gave
        a different part is computed here, so errors surface here with their usual traceback;
        with ``recompute=False`` (parts that only their own process can compute) it is None."""
        if self.is_child:
            self._child_map(fn, parts)
        out = [fn(parts[0])] if parts else []
        for k in range(1, len(parts)):
            got = self._collect(k)
            ok = got is not None and got[0] == parts[k]
            out.append(got[1] if ok else fn(parts[k]) if recompute else None)
        self.close()
        return out

    def _child_map(self, fn: Callable[[Any], Any], parts: Sequence[Any]) -> None:
        status = 1
        try:
            if self.rank < len(parts):
                payload = pickle.dumps(
                    (parts[self.rank], fn(parts[self.rank])), protocol=pickle.HIGHEST_PROTOCOL
                )
                with os.fdopen(self._pipe_w, "wb") as f:
                    f.write(payload)
            status = 0
        finally:
            os._exit(status)  # no atexit handlers, no flushing of buffers inherited from the parent

    def _collect(self, rank: int) -> tuple[Any, Any] | None:
        """(part, result) sent by the child of ``rank``, or None if it sent nothing usable.

        The child is not waited for: a whole pickle is its whole answer (it writes only after
        computing), and its exit (unmapping the memory of a process that parsed large files) takes
        milliseconds. It is reaped at the end of the pool's block (by then it has exited; its CPU
        time then counts in this process's children's)."""
        child = self._children.pop(rank, None)
        if child is None:
            return None
        pid, r = child
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _exited.append(pid)
        _reap()
        try:
            return pickle.loads(data) if data else None
        except Exception:  # a truncated pickle: the child died while writing
            return None

    def close(self) -> None:
        """Parent: stop and reap the children not collected. Child: exit."""
        if self.is_child:
            os._exit(0)
        for pid, r in self._children.values():
            os.close(r)
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self._children = {}

    def __enter__(self) -> ForkedWorkers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.is_child:
            os._exit(0 if exc_type is None else 1)
        self.close()
        _reap(wait=True)
