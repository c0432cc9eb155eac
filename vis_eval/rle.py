"""COCO RLE helpers for masks and YouTube-VIS segmentations (NumPy and pycocotools only, no torch).

One home for every RLE conversion of the package: binary masks -> compressed RLE (:func:`encode_masks`)
or uncompressed RLE (:func:`mask_to_uncompressed_rle`), any per-frame segmentation -> compressed RLE
(:func:`segm_to_rle`), JSON-ready copies (:func:`json_rle`) and vectorised decoding of many compressed
``counts`` strings into run lengths without dense masks (:func:`decode_counts`).

The compressed format (pycocotools ``rleToString``): each run length is written as a little-endian
sequence of 5-bit groups, one ASCII character ``48 + group`` per group, bit 0x20 meaning "more
groups follow" and, on the last group, bit 0x10 the sign; from the fourth run on, the value stored
is the difference to the run two positions earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "decode_counts",
    "encode_masks",
    "join_counts",
    "json_rle",
    "mask_to_uncompressed_rle",
    "run_sums",
    "segm_to_rle",
    "segmented_cumsum",
]


def json_rle(rle: dict) -> dict:
    """A JSON-ready copy of a compressed RLE: ``{"size": [H, W] (ints), "counts": str}``."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def encode_masks(masks: Any) -> list[dict]:
    """Binary masks (N, H, W) -> N JSON-ready compressed RLEs ``{"size": [H, W], "counts": str}``.

    ``masks`` is a bool or integer (non-zero = foreground) NumPy array or torch tensor (any device);
    soft masks must be thresholded first (``vis_eval.video.tracker.binary_masks``).
    """
    if hasattr(masks, "detach"):  # a torch tensor, without importing torch
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be bool or integer (threshold soft masks first), got {masks.dtype}")
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray((masks != 0).transpose(1, 2, 0).astype(np.uint8)))
    return [json_rle(rle) for rle in rles]


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict:
    """bool (H, W) -> COCO uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}`` (column-major
    runs, starting with a possibly empty run of zeros), the format of the official train JSONs."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def segm_to_rle(segm: Any, height: int, width: int) -> dict:
    """Compressed RLE for a truthy per-frame segmentation: a polygon list (rasterised at
    ``height`` x ``width``), an uncompressed RLE (converted with its own size) or a compressed RLE
    (returned as is, ``counts`` str or bytes)."""
    if isinstance(segm, list):
        # polygons: merged into one mask of the video's size
        rles = mask_util.frPyObjects(segm, height, width)
        return mask_util.merge(rles)
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError("an RLE segmentation needs 'size' and 'counts'")
        if isinstance(segm.get("counts"), list):
            # uncompressed RLE: converted with its own size
            h, w = segm["size"]
            return mask_util.frPyObjects(segm, h, w)
        return segm
    raise ValueError(f"unsupported segmentation type {type(segm).__name__}")


def segmented_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every change of the non-decreasing ``segment`` ids."""
    if values.size == 0:
        return values.copy()
    cs = np.cumsum(values)
    first = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
    lengths = np.diff(np.r_[first, values.size])
    return cs - np.repeat(cs[first] - values[first], lengths)


def decode_counts(strings: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many compressed RLE ``counts`` strings at once.

    Returns ``(counts, offsets)``: the run lengths of string ``i`` are ``counts[offsets[i]:offsets[i+1]]``
    (alternating 0-runs and 1-runs, starting with 0-runs).
    """
    n = len(strings)
    try:
        raw = [s if isinstance(s, bytes) else s.encode("ascii") for s in strings]
    except (UnicodeEncodeError, AttributeError) as e:
        raise ValueError("RLE counts must be ASCII strings (compressed RLE)") from e
    lens = np.fromiter((len(s) for s in raw), np.int64, n)
    char_off = np.r_[0, np.cumsum(lens)]
    v = np.frombuffer(b"".join(raw), np.uint8).astype(np.int64) - 48
    if v.size and (v.min() < 0 or v.max() > 63):
        raise ValueError("invalid character in a compressed RLE counts string")
    is_end = (v & 0x20) == 0
    ends_cum = np.r_[0, np.cumsum(is_end)]
    last = char_off[1:][lens > 0] - 1
    if last.size and not is_end[last].all():
        raise ValueError("truncated compressed RLE counts string")
    n_num = int(ends_cum[-1])
    num_start = np.flatnonzero(np.r_[True, is_end[:-1]]) if v.size else np.zeros(0, np.int64)
    char_num = ends_cum[:-1]  # number index of every character
    j = np.arange(v.size) - num_start[char_num] if v.size else np.zeros(0, np.int64)
    if j.size and j.max() > 11:
        raise ValueError("run length too large in a compressed RLE counts string")
    x = np.add.reduceat((v & 0x1F) << (5 * j), num_start) if n_num else np.zeros(0, np.int64)
    end_idx = np.flatnonzero(is_end)
    neg = (v[end_idx] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (j[end_idx][neg] + 1))
    per_string = ends_cum[char_off[1:]] - ends_cum[char_off[:-1]]
    offsets = np.r_[0, np.cumsum(per_string)]
    owner = np.repeat(np.arange(n), per_string)
    k = np.arange(n_num) - offsets[owner]
    # undo the delta coding: c[k] = x[k] + c[k-2] for k > 2, i.e. cumulative sums over the odd
    # positions and over the even positions >= 2 of each string
    counts = x.copy()
    odd = np.flatnonzero(k % 2 == 1)
    counts[odd] = segmented_cumsum(x[odd], owner[odd])
    even = np.flatnonzero((k % 2 == 0) & (k >= 2))
    counts[even] = segmented_cumsum(x[even], owner[even])
    if counts.size and counts.min() < 0:
        raise ValueError("negative run length in a compressed RLE counts string")
    return counts, offsets


def join_counts(strings: Sequence[str | bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Many compressed RLE ``counts`` strings as one ASCII buffer: ``(buffer, offsets, ascii)``.

    String ``i`` is ``buffer[offsets[i]:offsets[i+1]]``; a string that is not ASCII text or bytes
    is left empty there and has ``ascii[i]`` False.
    """
    n = len(strings)
    ascii_ok = np.ones(n, bool)
    try:
        buf = "".join(strings).encode("ascii")
        lens = np.fromiter(map(len, strings), np.int64, n)
    except (TypeError, UnicodeEncodeError):  # bytes, or non-ASCII text: string by string
        raw = []
        for i, s in enumerate(strings):
            try:
                raw.append(s.encode("ascii") if isinstance(s, str) else bytes(s))
            except (UnicodeEncodeError, TypeError):
                raw.append(b"")
                ascii_ok[i] = False
        buf = b"".join(raw)
        lens = np.fromiter(map(len, raw), np.int64, n)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    return buf, off, ascii_ok


_CHUNK_CHARS = 1 << 20  # characters per slice of :func:`run_sums` (temporaries stay in the caches)


def run_sums(strings: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area (sum of the 1-runs), run total and well-formedness of many compressed RLE ``counts`` strings.

    Works through the strings in slices of about ``_CHUNK_CHARS`` characters, so that its
    temporaries are reused rather than freshly mapped (and page-faulted) for tens of megabytes.
    See :func:`_run_sums` for the definitions.
    """
    n = len(strings)
    try:
        ends = np.cumsum(np.fromiter(map(len, strings), np.int64, n))
    except TypeError:  # entries without a length: flagged by _run_sums
        return _run_sums(strings)
    if n == 0 or ends[-1] <= _CHUNK_CHARS:
        return _run_sums(strings)
    cuts = np.unique(np.searchsorted(ends, np.arange(_CHUNK_CHARS, int(ends[-1]), _CHUNK_CHARS), side="left"))
    bounds = [0, *(int(c) + 1 for c in cuts if c + 1 < n), n]
    parts = [_run_sums(strings[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return tuple(np.concatenate(col) for col in zip(*parts))  # type: ignore[return-value]


def _run_sums(strings: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area (sum of the 1-runs), run total and well-formedness of many compressed RLE ``counts`` strings.

    One vectorised pass over the characters, with pycocotools' own arithmetic (run lengths are
    unsigned 32-bit, each delta added modulo 2**32). Returns int64 ``area``, int64 ``total`` and bool
    ``ok`` per string; ``ok`` is False for characters outside the alphabet, a truncated last number, a
    number using more than 60 bits or a run of 2**31 pixels or more (a negative run). A string
    with ``ok`` whose ``total`` is H x W is safe to give pycocotools, and ``area`` is then its
    ``mask.area``. Faster than :func:`decode_counts`, which keeps every run.
    """
    n = len(strings)
    area, total = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if n == 0:
        return area, total, np.ones(0, bool)
    buf, off, ok = join_counts(strings)
    lens = np.diff(off)
    u = np.frombuffer(buf, np.uint8) - np.uint8(48)  # wraps: characters outside 48..111 give > 63
    bad = np.flatnonzero(u > 63) if u.size and u.max() > 63 else off[:0]
    if bad.size:
        ok[np.searchsorted(off, bad, side="right") - 1] = False
        u[bad] = 0
    last = off[1:][lens > 0] - 1
    truncated = last[u[last] >= 32]
    if truncated.size:
        ok[np.searchsorted(off, truncated, side="right") - 1] = False
        u[truncated] = 0
    is_end = u < 32
    cont = np.flatnonzero(~is_end)  # continuation characters (a few per cent)
    # one-character numbers: 4 value bits and a sign bit; (c ^ 16) - 16 sign-extends 5 bits
    x = ((u[is_end] ^ np.uint8(16)).view(np.int8) - np.int8(16)).astype(np.int32)
    runs = off - np.searchsorted(cont, off)  # first number of each string
    if cont.size:
        # numbers of several characters: number index of each continuation character
        num = cont - np.arange(cont.size)
        first = np.flatnonzero(np.r_[True, num[1:] != num[:-1]])
        multi, g = num[first], np.diff(np.r_[first, cont.size])
        k = np.arange(cont.size) - np.repeat(first, g)  # group index inside the number
        # groups past the twelfth (60 bits) must be zero padding
        too_long = np.r_[multi[(g >= 12) & (x[multi] != 0)], num[(k >= 12) & (u[cont] != 32)]]
        if too_long.size:
            ok[np.searchsorted(runs, too_long, side="right") - 1] = False
        low = (u[cont].astype(np.int64) - 32) << (5 * np.minimum(k, 12))
        val = (x[multi].astype(np.int64) << (5 * np.minimum(g, 12))) + np.add.reduceat(low, first)
        x[multi] = val.astype(np.int32)  # low 32 bits, as pycocotools' cast to uint
    m = np.diff(runs)
    has = m > 0
    idx = runs[:-1][has]
    if idx.size == 0:
        return area, total, ok
    # deltas apply within each string's odd and even chains (the even one from its third number);
    # the numbers of one global parity hold one chain of each string: per parity, a contiguous copy
    # turned into the run lengths by one segmented cumulative sum, then checked and summed per string
    r0, r1 = runs[:-1][has], runs[1:][has]
    sums = []
    for p in (0, 1):
        c = x[p::2].copy()  # this parity's numbers: global index 2 i + p
        k0 = r0 + ((r0 + p) & 1)  # first number of this parity in each string
        # chain starts, in order: k0 and, where k0 is the string's first number, its third one
        starts = np.stack([np.where(k0 < r1, k0, -1), np.where((k0 == r0) & (r0 + 2 < r1), r0 + 2, -1)], 1)
        seg = starts[starts >= 0] // 2
        if seg.size:
            ssum = np.add.reduceat(c, seg)
            c[seg[1:]] -= ssum[:-1]
            c[: seg[0]] = 0
        np.cumsum(c, out=c)
        if c.size and c.min() < 0:
            neg = np.flatnonzero(c < 0) * 2 + p
            ok[np.searchsorted(runs, neg, side="right") - 1] = False
        lo, hi = (r0 - p + 1) // 2, (r1 - p + 1) // 2  # this parity's numbers of each string: [lo, hi)
        part = np.zeros(idx.size, np.int64)
        nz = hi > lo
        if nz.any():
            part[nz] = np.add.reduceat(c, lo[nz], dtype=np.int64)
        sums.append(part)
    total[has] = sums[0] + sums[1]
    area[has] = np.where((r0 & 1) == 0, sums[1], sums[0])  # the numbers of odd rank in the string
    return area, total, ok
