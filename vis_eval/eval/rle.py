"""Vectorised decoding of COCO compressed RLE strings into run lengths (no dense masks).

The compressed format (pycocotools ``rleToString``): each run length is written as a little-endian
sequence of 5-bit groups, one ASCII character ``48 + group`` per group, bit 0x20 meaning "more
groups follow" and, on the last group, bit 0x10 the sign; from the fourth run on, the value stored
is the difference to the run two positions earlier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["decode_counts", "segmented_cumsum"]


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
