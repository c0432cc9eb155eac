"""The optional C accelerator of the RLE work (``vis_eval/_rle_accel.c``), loaded with ctypes.

``pip install -e .`` (``make setup``) compiles it when a C compiler is present (a setuptools
``Extension(optional=True)``: without a compiler the install succeeds and nothing is built). When
it is absent, or when the environment variable ``VIS_EVAL_PURE`` is set to a non-empty value other
than ``0``, :func:`get` returns None and the evaluation takes the pure NumPy + pycocotools path,
with identical statistics (tested).

Both functions work on one buffer of concatenated compressed RLE ``counts`` strings (ASCII bytes)
and the int64 offsets of its strings (``off[i]:off[i+1]``): :meth:`Accel.stats` gives each mask's
area, run total, well-formedness (the definitions of :func:`vis_eval.rle.run_sums`) and
foreground extent; :meth:`Accel.group_intersections` the common foreground pixels of all pairs of
well-formed masks within groups of masks of one size (each mask decoded once).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import warnings
from functools import lru_cache

import numpy as np

__all__ = ["Accel", "available", "forced_pure", "get"]

_I64P = ctypes.POINTER(ctypes.c_int64)
_U8P = ctypes.POINTER(ctypes.c_uint8)


def _ptr(a: np.ndarray, kind: type) -> object:
    return a.ctypes.data_as(kind)


def _buf_ptr(buf: bytes) -> object:
    return ctypes.cast(ctypes.c_char_p(buf), _U8P)


class Accel:
    """The loaded shared library (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        lib = ctypes.CDLL(path)
        self._stats = lib.vis_rle_stats
        self._stats.restype = None
        self._stats.argtypes = [_U8P, _I64P, ctypes.c_int64, _I64P, _I64P, _U8P, _I64P, _I64P]
        self._groups = lib.vis_rle_group_intersections
        self._groups.restype = ctypes.c_int
        self._groups.argtypes = [_U8P, _I64P, _I64P, _I64P, _U8P, _I64P, _I64P, _I64P, ctypes.c_int64, _I64P]

    def stats(
        self, buf: bytes, off: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(area, total, ok, lo, hi)`` of the strings ``buf[off[i]:off[i+1]]``: int64, int64, bool,
        and the first foreground pixel / one past the last one (column-major; 0, 0 when empty)."""
        off = np.ascontiguousarray(off, np.int64)
        n = off.size - 1
        if n < 0 or (n and (off[0] < 0 or off[-1] > len(buf) or np.any(np.diff(off) < 0))):
            raise ValueError("string offsets must be non-decreasing and inside the buffer")
        area, total, lo, hi = (np.zeros(n, np.int64) for _ in range(4))
        ok = np.zeros(n, np.uint8)
        self._stats(
            _buf_ptr(buf),
            _ptr(off, _I64P),
            n,
            _ptr(area, _I64P),
            _ptr(total, _I64P),
            _ptr(ok, _U8P),
            _ptr(lo, _I64P),
            _ptr(hi, _I64P),
        )
        return area, total, ok.view(bool), lo, hi

    def group_intersections(
        self,
        a: tuple[bytes, np.ndarray],
        ia: np.ndarray,
        ga: np.ndarray,
        b: tuple[bytes, np.ndarray],
        ib: np.ndarray,
        gb: np.ndarray,
    ) -> np.ndarray:
        """Common foreground pixels of every (a-mask, b-mask) pair of each group ``q``: masks
        ``ia[ga[q]:ga[q+1]]`` of the strings ``a = (buffer, offsets)`` with masks ``ib[gb[q]:gb[q+1]]``
        of ``b``; int64, group after group, a-major inside a group. The masks must be well formed
        and those of one group of one size (not checked here: the caller checked their run totals)."""
        (a_buf, a_off), (b_buf, b_off) = a, b
        args = []
        for buf, off, idx, bounds in ((a_buf, a_off, ia, ga), (b_buf, b_off, ib, gb)):
            off, idx, bounds = (np.ascontiguousarray(x, np.int64) for x in (off, idx, bounds))
            if off.size == 0 or off[0] < 0 or off[-1] > len(buf) or np.any(np.diff(off) < 0):
                raise ValueError("string offsets must be non-decreasing and inside the buffer")
            if idx.size and (idx.min() < 0 or idx.max() >= off.size - 1):
                raise ValueError("mask index out of range")
            if bounds.size == 0 or bounds[0] != 0 or bounds[-1] != idx.size or np.any(np.diff(bounds) < 0):
                raise ValueError("group bounds must be non-decreasing from 0 to the number of masks")
            args.append((buf, off, idx, bounds))
        (a_buf, a_off, ia, ga), (b_buf, b_off, ib, gb) = args
        if ga.size != gb.size:
            raise ValueError("both sides must have the same number of groups")
        out = np.zeros(int(np.dot(np.diff(ga), np.diff(gb))), np.int64)
        status = self._groups(
            _buf_ptr(a_buf),
            _ptr(a_off, _I64P),
            _ptr(ia, _I64P),
            _ptr(ga, _I64P),
            _buf_ptr(b_buf),
            _ptr(b_off, _I64P),
            _ptr(ib, _I64P),
            _ptr(gb, _I64P),
            ga.size - 1,
            _ptr(out, _I64P),
        )
        if status != 0:
            raise MemoryError("vis_eval RLE accelerator: out of memory")
        return out


def forced_pure() -> bool:
    """Whether ``VIS_EVAL_PURE`` asks for the pure path."""
    return os.environ.get("VIS_EVAL_PURE", "") not in ("", "0")


@lru_cache(maxsize=1)
def _load() -> Accel | None:
    try:  # the compiled module: only its file is used
        module = importlib.import_module(f"{__package__}._rle_accel")
    except ImportError:
        return None
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        return Accel(path)
    except (OSError, AttributeError) as e:  # a stale or foreign build: the pure path, said once
        warnings.warn(
            f"vis_eval: ignoring the RLE accelerator {path} ({e}); rebuild it with `make setup`", stacklevel=3
        )
        return None


def available() -> bool:
    """Whether the compiled accelerator is built and loadable (whatever ``VIS_EVAL_PURE`` says)."""
    return _load() is not None


def get() -> Accel | None:
    """The accelerator, or None when it is not built or ``VIS_EVAL_PURE`` forces the pure path."""
    return None if forced_pure() else _load()
