"""Fast, exact YouTube-VIS video AP (spec §4), vectorised with NumPy.

Same numbers as the plain per-pair loops of :mod:`vis_eval.evaluation.reference` (and of the official
YouTube-VIS API), organised for speed:

* Masks: every truthy per-frame mask of every track is gathered once (flat arrays of owner track,
  frame, RLE); one pass over their compressed strings gives each mask's area and run total (masks
  whose runs do not cover their H x W pixels are refused): :func:`vis_eval.rle.run_sums` (NumPy), or
  the optional compiled accelerator (:mod:`vis_eval.rle_accel`, identical numbers).
* IoU with the accelerator: the exact intersections of all (result, GT) mask pairs of the same
  (video, category) bucket and frame in one C call (each mask decoded once into its foreground
  intervals). Without it (or with ``VIS_EVAL_PURE=1``), pycocotools:
* IoU, pure path: the pairs are compared in few ``pycocotools.mask.iou`` calls: consecutive
  (bucket, frame) groups of a
  video are laid side by side on one canvas by rewriting only the first run length of each
  compressed RLE string (a shift by whole frames), so the call's bounding-box test skips the pairs
  of different groups while the IoU of two masks of one group is that of the original masks.
  Per-frame intersections are recovered exactly from the IoU and the two areas
  (``I = IoU (a_d + a_g) / (1 + IoU)``, rounded), summed per track pair with a ``bincount``, and
  the video union follows from prefix sums of the per-frame areas (which handles the zip truncation
  to the shorter track and one-sided frames). Groups holding a string whose first run is not a
  short well-formed number, groups of many masks and (video, frame)s of many masks (where one call
  costs less than rewriting the strings) take one plain ``iou`` call per (video, frame). Masks whose
  size differs from the video's take a slow exact path with ``mask_util.merge`` (both paths). Boxes
  of results are never computed (segm evaluation does not use them).
* The cyclic garbage collector is paused during the evaluation (many small containers, no cycles).
* Parts: the mask work above is independent per result track. Each part of the results computes
  its kept tracks (the ``max_dets[-1]`` best of each (video, category) within the part) against
  the GT tracks of their buckets: their mean areas and IoU rows; the parent merges the parts,
  keeps the best tracks over all of them and assembles the IoU matrices. ``workers``: parts are
  ranges of videos with about equal numbers of frame entries, one per process
  (:class:`~vis_eval.evaluation.workers.ForkedWorkers`); :class:`PieceEvaluation`: the pieces of a
  results file read in pieces, one per process (``python -m vis_eval.evaluate``). Each process
  also does the GT-only work (malformed GT masks, GT mean areas) of one range of videos. Same
  numbers with any number of parts.
* Matching: the greedy per-threshold matcher runs once per result rank over all buckets, area ranges
  and IoU thresholds at once (buckets padded to a power of two of their GT count).
* Accumulation: one lexicographic sort of all results, then per maxDets the cumulative sums of all
  categories at once (padded to the longest category), the precision at each recall threshold
  read at the position of the v-th true positive (``rc >= r  <=>  tp >= v(r)``, exact).
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pycocotools.mask as mask_util

from ..file_io import gc_paused
from ..rle import join_counts, run_sums, segm_to_rle
from ..rle_accel import Accel
from ..rle_accel import get as get_accel
from .params import EvalParams, EvalResult, prepare_inputs, summarize
from .workers import ForkedWorkers

__all__ = ["PieceEvaluation", "evaluate"]

logger = logging.getLogger(__name__)

_COUNTS = operator.itemgetter("counts")
_VIDEO_ID = operator.itemgetter("video_id")
_CATEGORY_ID = operator.itemgetter("category_id")
_SIZE = operator.itemgetter("size")


class _Entries:
    """The truthy per-frame masks of a list of tracks, flattened (grouped by track, frames in order).

    ``owner``/``t``: track index and frame index per entry; ``rles``: compressed RLEs; ``area``: their
    pycocotools areas; ``regular``: whether the mask has its video's size; ``start``: per track, the
    index of its first entry (length n_tracks + 1); ``length``: per track, its number of frames.
    """

    def __init__(self, segms: list[list], sizes: list[tuple[int, int]], accel: Accel | None = None) -> None:
        self.length = np.fromiter(map(len, segms), np.int64, len(segms))
        flat = list(itertools.chain.from_iterable(segms))
        truthy = list(map(bool, flat))
        pos = np.flatnonzero(np.fromiter(truthy, bool, len(truthy)))
        seq_start = np.r_[0, np.cumsum(self.length)]
        self.owner = np.searchsorted(seq_start, pos, side="right") - 1
        self.t = pos - seq_start[self.owner]
        rles = list(itertools.compress(flat, truthy))
        try:
            counts = list(map(_COUNTS, rles))
            types = set(map(type, counts))
        except (TypeError, KeyError):
            types = {None}
        if not types <= {str, bytes}:  # polygons / uncompressed RLE (GT) or malformed entries
            for k, r in enumerate(rles):
                if type(r) is not dict or not isinstance(r.get("counts"), (str, bytes)):
                    h, w = sizes[self.owner[k]]
                    rles[k] = segm_to_rle(r, h, w)
            counts = list(map(_COUNTS, rles))
            types = set(map(type, counts))
        self.rles, self.counts = rles, counts
        self.str_counts = types <= {str}
        n = len(rles)
        # one pass over the strings: areas and run totals (the malformed-mask check); the
        # accelerator keeps the joined strings, which it reads again for the intersections
        self.accel = accel
        if accel is None:
            self.area, total, well_formed = run_sums(counts)
        else:
            self.buf, self.off, ascii_ok = join_counts(counts)
            self.area, total, well_formed, _, _ = accel.stats(self.buf, self.off)
            well_formed &= ascii_ok
        track_size = [list(map(int, hw)) for hw in sizes]
        ref = list(map(track_size.__getitem__, self.owner.tolist()))
        self.regular = np.fromiter(map(operator.eq, map(_SIZE, rles), ref), bool, n)
        hw = np.array(track_size, np.int64).reshape(-1, 2)
        self.h, self.w = hw[self.owner, 0], hw[self.owner, 1]
        pixels = self.h * self.w
        for k in np.flatnonzero(~self.regular).tolist():  # masks of another size: their own H x W
            size = rles[k].get("size")
            ok = isinstance(size, (list, tuple)) and len(size) == 2 and all(map(_is_count, size))
            pixels[k] = int(size[0]) * int(size[1]) if ok else -1
        #: entries whose runs do not cover their H x W pixels (pycocotools would loop forever on them)
        self.malformed = np.flatnonzero(~well_formed | (total != pixels))
        self.start = np.searchsorted(self.owner, np.arange(len(segms) + 1))

    def malformed_tracks(
        self, track_keys: np.ndarray, counted: np.ndarray | None = None
    ) -> tuple[int, int, int]:
        """(number of malformed entries of the ``counted`` tracks (bool per track; None: all),
        ``track_keys`` value of the first of them by (key, frame), its frame), or (0, -1, -1)."""
        e = self.malformed
        if counted is not None:
            e = e[counted[self.owner[e]]]
        if not e.size:
            return 0, -1, -1
        keys = track_keys[self.owner[e]]
        j = int(np.lexsort((self.t[e], keys))[0])
        return int(e.size), int(keys[j]), int(self.t[e[j]])

    def prefix_area(self, tracks: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Per query: the summed area of the entries of ``tracks[i]`` in frames ``< length[i]``."""
        big = int(max(self.t.max(initial=0), length.max(initial=0))) + 2
        cum = np.r_[0, np.cumsum(self.area)]
        idx = np.searchsorted(self.owner * big + self.t, tracks * big + length, side="left")
        return cum[idx] - cum[self.start[tracks]]

    def mean_truthy_area(self, n_tracks: int) -> np.ndarray:
        """Per track: mean of the non-zero areas, 0 if none (spec §4.2 ``avg_area``)."""
        tot = np.bincount(self.owner, weights=self.area, minlength=n_tracks)
        cnt = np.bincount(self.owner, weights=self.area != 0, minlength=n_tracks)
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


_HEAD = 7  # characters read / written for the first run length of a compressed RLE string
_MAX_CANVAS = (1 << 31) - 1  # pixels of one batched canvas (pycocotools run lengths are 32-bit)
_PAIRS_PER_CALL = 16384  # bound on rows x columns of one batched ``mask_util.iou`` call
_FRAME_CALL_MASKS = 16  # (bucket, frame) groups with this many masks get a per-frame ``iou`` call
_VIDEO_FRAME_CALL_MASKS = 24  # so do all groups of a (video, frame) with this many compared masks


def _first_runs(counts: list) -> tuple[np.ndarray, np.ndarray]:
    """First run length of compressed RLE ``counts`` strings and its length in characters.

    The length is 0 where the first run is not a non-negative number of at most ``_HEAD``
    characters (malformed strings, left to the per-frame path).
    """
    n = len(counts)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        heads = np.array(list(map(operator.getitem, counts, itertools.repeat(slice(0, _HEAD)))), f"S{_HEAD}")
    except (UnicodeEncodeError, TypeError):  # non-ASCII strings: all left to the per-frame path
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    v = heads.view(np.uint8).reshape(n, _HEAD).astype(np.int64) - 48
    cols = np.arange(_HEAD)[None, :]
    valid = (v >= 0) & (v < 64)
    is_end = valid & (v < 32)
    end = np.argmax(is_end, axis=1)[:, None]
    ok = np.take_along_axis(is_end, end, axis=1)[:, 0] & np.all(valid | (cols > end), axis=1)
    val = np.sum(np.where(cols <= end, (v & 31) << (5 * cols), 0), axis=1)
    ok &= (np.take_along_axis(v, end, axis=1)[:, 0] & 16) == 0  # a negative first run is malformed
    return val, np.where(ok, end[:, 0] + 1, 0)


def _encode_fixed(values: np.ndarray) -> np.ndarray:
    """Fixed-width (``_HEAD`` characters) compressed-RLE codes of values in [0, 2**34), as bytes."""
    k = np.arange(_HEAD)[None, :]
    chars = 48 + ((values[:, None] >> (5 * k)) & 31) + np.where(k < _HEAD - 1, 32, 0)
    return np.ascontiguousarray(chars.astype(np.uint8)).view(f"S{_HEAD}")[:, 0]


def _shifted_rles(
    counts: list,
    head_len: np.ndarray,
    first_run: np.ndarray,
    group: np.ndarray,
    shift: np.ndarray,
    canvas: list,
    as_str: bool,
) -> list[dict]:
    """RLE dicts of ``counts`` strings moved onto their group's canvas: ``size`` becomes
    ``canvas[group]`` and the first run length (``first_run``, written in ``head_len`` characters)
    grows by ``shift[group]`` pixels.

    Only the first run changes: later runs are coded relative to the runs two places earlier,
    and the first run is never such a base. ``as_str``: all ``counts`` are ``str`` (else bytes).
    """
    pref = _encode_fixed(first_run + shift[group])
    if as_str:
        pref = pref.astype(f"U{_HEAD}")
    else:
        counts = [c.encode("ascii") if type(c) is str else c for c in counts]
    sizes = map(canvas.__getitem__, group.tolist())
    return [
        {"size": s, "counts": p + c[k:]}
        for s, p, c, k in zip(sizes, pref.tolist(), counts, head_len.tolist())
    ]


def _batched_intersections(
    d: _Entries,
    g: _Entries,
    d_sel: np.ndarray,
    g_sel: np.ndarray,
    d_counts: list,
    g_counts: list,
    d_key: np.ndarray,
    g_key: np.ndarray,
    d_first_run: np.ndarray,
    g_first_run: np.ndarray,
    d_head: np.ndarray,
    g_head: np.ndarray,
    d_video: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact intersections of the same-(bucket, frame) result / GT mask pairs in few ``iou`` calls.

    ``d_sel`` / ``g_sel``: regular entries with a well-formed first run, sorted by their
    (bucket, frame) group ``key``, every group present on both sides; ``*_first_run`` / ``*_head``:
    their first run lengths and its length in characters; ``d_video``: video of each entry.
    Consecutive groups of one video are laid side by side on one canvas (slot ``q`` of a call is
    shifted by ``q`` frames, i.e. ``q h w`` pixels: only the first run length changes), so one
    ``mask_util.iou`` call compares all their masks; its bounding-box test skips most pairs of
    different slots. Two masks of one slot are shifted alike, so their IoU is that of the original
    masks (whatever the other masks of the call); the intersection follows exactly from the IoU and
    the two areas.

    Returns (result entry, GT entry, intersection) of every same-group pair.
    """
    _, d_first, d_cnt = np.unique(d_key[d_sel], return_index=True, return_counts=True)
    _, g_first, g_cnt = np.unique(g_key[g_sel], return_index=True, return_counts=True)
    n_q = d_first.size
    lead = d_sel[d_first]
    video, h, w = d_video[lead], d.h[lead], d.w[lead]
    hw = h * w
    # batch consecutive groups of one video into calls; slot = position of the group in its call
    call = np.zeros(n_q, np.int64)
    slot = np.zeros(n_q, np.int64)
    c, m, n, k, prev_v = -1, 0, 0, 0, -1
    for q, (v, a, b, s) in enumerate(zip(video.tolist(), d_cnt.tolist(), g_cnt.tolist(), hw.tolist())):
        if v != prev_v or (m + a) * (n + b) > _PAIRS_PER_CALL or (k + 1) * s > _MAX_CANVAS:
            c, m, n, k, prev_v = c + 1, 0, 0, 0, v
        call[q], slot[q] = c, k
        m, n, k = m + a, n + b, k + 1
    q_first = np.searchsorted(call, np.arange(c + 2))  # groups of each call
    lead_q = q_first[:-1]
    sizes = [
        [hh, ww * ns] for hh, ww, ns in zip(h[lead_q].tolist(), w[lead_q].tolist(), np.diff(q_first).tolist())
    ]
    d_q = np.repeat(np.arange(n_q), d_cnt)
    g_q = np.repeat(np.arange(n_q), g_cnt)
    shift = slot * hw  # offset of each group's slot on its canvas, in pixels
    canvas = list(map(sizes.__getitem__, call.tolist()))  # canvas size of each group
    as_str = d.str_counts and g.str_counts
    d_rles = _shifted_rles(d_counts, d_head, d_first_run, d_q, shift, canvas, as_str)
    g_rles = _shifted_rles(g_counts, g_head, g_first_run, g_q, shift, canvas, as_str)
    d_row0 = np.r_[d_first, d_sel.size][q_first]  # first row / column of each call
    g_col0 = np.r_[g_first, g_sel.size][q_first]
    n_cols = np.diff(g_col0)
    flat_off = np.r_[0, np.cumsum(np.diff(d_row0) * n_cols)]
    out = []
    zeros = [0] * int(n_cols.max(initial=0))
    r, col = d_row0.tolist(), g_col0.tolist()
    for i in range(c + 1):
        o = mask_util.iou(d_rles[r[i] : r[i + 1]], g_rles[col[i] : col[i + 1]], zeros[: col[i + 1] - col[i]])
        out.append(np.asarray(o, np.float64).ravel())
    o_all = np.concatenate(out) if out else np.zeros(0)
    # the same-group pairs
    n_p = g_cnt[d_q]
    pi = np.repeat(np.arange(d_sel.size), n_p)
    start = np.r_[0, np.cumsum(n_p)][:-1]
    pj = np.repeat(g_first[d_q] - start, n_p) + np.arange(pi.size)
    pc = call[d_q][pi]
    op = o_all[flat_off[pc] + (pi - d_row0[pc]) * n_cols[pc] + pj - g_col0[pc]]
    de, ge = d_sel[pi], g_sel[pj]
    s = (d.area[de] + g.area[ge]).astype(np.float64)
    return de, ge, np.rint(op * s / (1.0 + op))


def _same_key_pairs(
    d_sel: np.ndarray, g_sel: np.ndarray, d_key: np.ndarray, g_key: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every (result entry, GT entry) pair of equal ``key``, given entries sorted by key with the
    same keys on both sides."""
    _, d_first, d_cnt = np.unique(d_key[d_sel], return_index=True, return_counts=True)
    _, g_first, g_cnt = np.unique(g_key[g_sel], return_index=True, return_counts=True)
    d_q = np.repeat(np.arange(d_first.size), d_cnt)
    n_p = g_cnt[d_q]
    pi = np.repeat(np.arange(d_sel.size), n_p)
    start = np.r_[0, np.cumsum(n_p)][:-1]
    pj = np.repeat(g_first[d_q] - start, n_p) + np.arange(pi.size)
    return d_sel[pi], g_sel[pj]


def _accel_intersections(
    d: _Entries,
    g: _Entries,
    d_sel: np.ndarray,
    g_sel: np.ndarray,
    d_key: np.ndarray,
    g_key: np.ndarray,
    pair_index: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_pairs: int,
) -> np.ndarray:
    """Per track pair (flat index ``pair_index(result track, GT track)``): the summed exact
    intersections of its same-frame regular masks, from the compiled accelerator (one call; each
    mask decoded once)."""
    assert d.accel is not None
    d_sel = d_sel[np.argsort(d_key[d_sel], kind="stable")]
    g_sel = g_sel[np.argsort(g_key[g_sel], kind="stable")]
    _, d_first = np.unique(d_key[d_sel], return_index=True)
    _, g_first = np.unique(g_key[g_sel], return_index=True)
    i_pair = d.accel.group_intersections(
        (d.buf, d.off), d_sel, np.r_[d_first, d_sel.size], (g.buf, g.off), g_sel, np.r_[g_first, g_sel.size]
    )
    de, ge = _same_key_pairs(d_sel, g_sel, d_key, g_key)
    return np.bincount(pair_index(d.owner[de], g.owner[ge]), i_pair, n_pairs)


def _bucket_ious(
    d: _Entries,
    g: _Entries,
    buckets: list[tuple[list[int], list[int]]],
    bucket_video: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video IoU matrices (spec §4.4) of the (video, category) buckets holding results and GT,
    flattened: bucket after bucket, each [D, G] row-major.

    ``buckets``: per bucket, the result track indices (score order) and the GT track indices (load
    order); ``bucket_video``: the video (order index) of each bucket. One ``mask_util.iou`` call per
    (video, frame) compares that frame's result and GT masks of the categories present on both
    sides (pairs of different categories are discarded). The exact integer intersection of a pair
    follows from its IoU and the two areas (``IoU = I / (a_d + a_g - I)`` is correctly rounded,
    hence ``I = IoU (a_d + a_g) / (1 + IoU)`` to a few ulps); intersections are summed per track
    pair with a ``bincount`` and the video union is the sum of both tracks' areas over the zipped
    frames (prefix sums up to the shorter length) minus the intersection. Masks whose size differs
    from their video's are handled per pair with ``mask_util.merge``. Also returns, per pair, its
    number of size-mismatched frames and whether its union is empty.
    """
    n_b = len(buckets)
    if n_b == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool)
    nd_b = np.array([len(di) for di, _ in buckets], np.int64)
    ng_b = np.array([len(gi) for _, gi in buckets], np.int64)
    off = np.r_[0, np.cumsum(nd_b * ng_b)]
    n_pairs = int(off[-1])
    # per track: bucket, row / column inside the bucket
    d_bkt = np.full(len(d.start) - 1, -1, np.int64)
    g_bkt = np.full(len(g.start) - 1, -1, np.int64)
    d_row = np.zeros(len(d.start) - 1, np.int64)
    g_col = np.zeros(len(g.start) - 1, np.int64)
    for b, (di, gi) in enumerate(buckets):
        d_bkt[di], d_row[di] = b, np.arange(len(di))
        g_bkt[gi], g_col[gi] = b, np.arange(len(gi))
    n_t = int(max(d.t.max(initial=0), g.t.max(initial=0))) + 1
    de_b, ge_b = d_bkt[d.owner], g_bkt[g.owner]
    d_video = bucket_video[np.maximum(de_b, 0)]  # video of each entry (any for unbucketed ones)
    d_key = np.where(de_b >= 0, de_b * n_t + d.t, -1)  # (bucket, frame) group per entry
    g_key = np.where(ge_b >= 0, ge_b * n_t + g.t, -2)
    d_reg_keys = d_key[d.regular & (d_key >= 0)]
    g_reg_keys = g_key[g.regular & (g_key >= 0)]
    d_sel = np.flatnonzero(d.regular & np.isin(d_key, g_reg_keys))
    g_sel = np.flatnonzero(g.regular & np.isin(g_key, d_reg_keys))
    inter = np.zeros(n_pairs)

    def pair_index(td: np.ndarray, tg: np.ndarray) -> np.ndarray:
        return off[d_bkt[td]] + d_row[td] * ng_b[d_bkt[td]] + g_col[tg]

    if d.accel is not None:  # the compiled accelerator: every same-(bucket, frame) pair in one call
        inter[:] = _accel_intersections(d, g, d_sel, g_sel, d_key, g_key, pair_index, n_pairs)
        d_sel = g_sel = d_sel[:0]  # nothing left for the pycocotools paths

    def add(de: np.ndarray, ge: np.ndarray, i_pair: np.ndarray) -> None:
        inter[:] += np.bincount(pair_index(d.owner[de], g.owner[ge]), i_pair, n_pairs)

    # batched path: groups of few masks (crowded frames amortise a call of their own) whose masks
    # all have a well-formed first run
    d_sel = d_sel[np.argsort(d_key[d_sel], kind="stable")]
    g_sel = g_sel[np.argsort(g_key[g_sel], kind="stable")]
    keys, n_masks = np.unique(np.r_[d_key[d_sel], g_key[g_sel]], return_counts=True)
    slow_keys = keys[n_masks >= _FRAME_CALL_MASKS]
    # frames of a video holding many compared masks (all buckets together) amortise one plain
    # per-frame call: cheaper than rewriting every string for the batched calls
    d_vf = d_video[d_sel] * n_t + d.t[d_sel]
    g_vf = bucket_video[ge_b[g_sel]] * n_t + g.t[g_sel]
    vf, vf_inv, vf_n = np.unique(np.r_[d_vf, g_vf], return_inverse=True, return_counts=True)
    busy = vf_n[vf_inv] >= _VIDEO_FRAME_CALL_MASKS
    slow_keys = np.union1d(slow_keys, np.r_[d_key[d_sel], g_key[g_sel]][busy])
    d_small = np.flatnonzero(~np.isin(d_key[d_sel], slow_keys))
    g_small = np.flatnonzero(~np.isin(g_key[g_sel], slow_keys))
    d_counts = list(map(d.counts.__getitem__, d_sel[d_small].tolist()))
    g_counts = list(map(g.counts.__getitem__, g_sel[g_small].tolist()))
    d_run, d_head = _first_runs(d_counts)
    g_run, g_head = _first_runs(g_counts)
    slow_keys = np.union1d(
        slow_keys, np.r_[d_key[d_sel[d_small[d_head == 0]]], g_key[g_sel[g_small[g_head == 0]]]]
    )
    d_ok = ~np.isin(d_key[d_sel[d_small]], slow_keys)  # over the small-group entries
    g_ok = ~np.isin(g_key[g_sel[g_small]], slow_keys)
    d_fast, g_fast = d_small[d_ok], g_small[g_ok]
    d_run, d_head, g_run, g_head = d_run[d_ok], d_head[d_ok], g_run[g_ok], g_head[g_ok]
    d_counts = list(itertools.compress(d_counts, d_ok.tolist()))
    g_counts = list(itertools.compress(g_counts, g_ok.tolist()))
    if d_fast.size:
        de, ge, i_pair = _batched_intersections(
            d,
            g,
            d_sel[d_fast],
            g_sel[g_fast],
            d_counts,
            g_counts,
            d_key,
            g_key,
            d_run,
            g_run,
            d_head,
            g_head,
            d_video,
        )
        add(de, ge, i_pair)
    d_sel = d_sel[np.isin(d_key[d_sel], slow_keys)]
    g_sel = g_sel[np.isin(g_key[g_sel], slow_keys)]
    # per-frame path: one iou call per (video, frame) over the masks of the buckets on both sides
    d_vkey = d_video * n_t + d.t
    g_vkey = bucket_video[np.maximum(ge_b, 0)] * n_t + g.t
    d_sel = d_sel[np.argsort(d_vkey[d_sel], kind="stable")]
    g_sel = g_sel[np.argsort(g_vkey[g_sel], kind="stable")]
    if d_sel.size:
        _, d_first = np.unique(d_vkey[d_sel], return_index=True)
        _, g_first = np.unique(g_vkey[g_sel], return_index=True)
        d_bounds = np.r_[d_first, d_sel.size].tolist()
        g_bounds = np.r_[g_first, g_sel.size].tolist()
        d_rles = list(map(d.rles.__getitem__, d_sel.tolist()))
        g_rles = list(map(g.rles.__getitem__, g_sel.tolist()))
        zeros = [0] * int(np.diff(g_bounds).max())
        iou = mask_util.iou
        o_all = [
            iou(d_rles[d0:d1], g_rles[g0:g1], zeros[: g1 - g0]).ravel()
            for d0, d1, g0, g1 in zip(d_bounds[:-1], d_bounds[1:], g_bounds[:-1], g_bounds[1:])
        ]
        # every (result, GT) entry pair of each call, row-major, then those of one bucket
        nd_q, ng_q = np.diff(d_bounds), np.diff(g_bounds)
        n_q = nd_q * ng_q
        q = np.repeat(np.arange(nd_q.size), n_q)
        local = np.arange(int(n_q.sum())) - np.repeat(np.r_[0, np.cumsum(n_q)][:-1], n_q)
        di = np.asarray(d_bounds[:-1])[q] + local // ng_q[q]
        gi = np.asarray(g_bounds[:-1])[q] + local % ng_q[q]
        same = de_b[d_sel[di]] == ge_b[g_sel[gi]]
        op = np.concatenate(o_all).astype(np.float64)[same]
        de, ge = d_sel[di[same]], g_sel[gi[same]]
        s = (d.area[de] + g.area[ge]).astype(np.float64)
        add(de, ge, np.rint(op * s / (1.0 + op)))
    inter = inter.astype(np.int64)
    # masks of another size than the video's: exact per pair (rare)
    mismatch = np.zeros(n_pairs, np.int64)  # a_d + a_g of frames where both exist with different sizes
    n_mismatch = np.zeros(n_pairs, np.int64)  # such frames per pair
    odd_d = np.flatnonzero(~d.regular & (d_key >= 0))
    odd_g = np.flatnonzero(~g.regular & (g_key >= 0))
    if odd_d.size or odd_g.size:
        by_key_d: dict[int, list[int]] = defaultdict(list)
        by_key_g: dict[int, list[int]] = defaultdict(list)
        for e in np.flatnonzero(d_key >= 0).tolist():
            by_key_d[int(d_key[e])].append(e)
        for e in np.flatnonzero(g_key >= 0).tolist():
            by_key_g[int(g_key[e])].append(e)
        todo = {(e, f) for e in odd_d.tolist() for f in by_key_g.get(int(d_key[e]), [])}
        todo |= {(e, f) for f in odd_g.tolist() for e in by_key_d.get(int(g_key[f]), [])}
        for e, f in todo:
            td, tg = d.owner[e], g.owner[f]
            k = off[d_bkt[td]] + d_row[td] * ng_b[d_bkt[td]] + g_col[tg]
            rd, rg = d.rles[e], g.rles[f]
            if list(rd["size"]) == list(rg["size"]):
                inter[k] += int(mask_util.area(mask_util.merge([rd, rg], intersect=True)))
            else:
                mismatch[k] += d.area[e] + g.area[f]
                n_mismatch[k] += 1
    # union over the zipped frames: both tracks' areas up to the shorter length, minus I
    pb = np.repeat(np.arange(n_b), nd_b * ng_b)
    local = np.arange(n_pairs) - off[pb]
    p_d = np.concatenate([np.asarray(di, np.int64) for di, _ in buckets])[
        np.repeat(np.r_[0, np.cumsum(nd_b)][:-1], nd_b * ng_b) + local // ng_b[pb]
    ]
    p_g = np.concatenate([np.asarray(gi, np.int64) for _, gi in buckets])[
        np.repeat(np.r_[0, np.cumsum(ng_b)][:-1], nd_b * ng_b) + local % ng_b[pb]
    ]
    lmin = np.minimum(d.length[p_d], g.length[p_g])
    union = d.prefix_area(p_d, lmin) + g.prefix_area(p_g, lmin) - inter - mismatch
    pos = union > 0
    ious = np.zeros(n_pairs)
    ious[pos] = inter[pos] / union[pos]
    return ious, n_mismatch, ~pos


class _GroundTruth(NamedTuple):
    """What every process derives from the ground truth (identical in all of them)."""

    p: EvalParams
    vid_ids: list
    cat_ids: list
    vorder: dict
    corder: dict
    sizes: list  # (H, W) per video order index
    anns: list[dict]  # GT tracks of the evaluated videos and categories, in load order
    vid: np.ndarray  # [NG] video order index
    cat: np.ndarray  # [NG] category order index
    crowd: np.ndarray  # [NG]
    bucket: dict  # (video, category) order indices -> GT track indices (load order)


def _ground_truth(p: EvalParams, gt: dict, videos: dict, vid_ids: list, cat_ids: list) -> _GroundTruth:
    vorder = {v: i for i, v in enumerate(vid_ids)}
    corder = {c: k for k, c in enumerate(cat_ids)}
    anns, g_v, g_k = [], [], []
    for ann in gt.get("annotations") or []:
        v, k = vorder.get(ann["video_id"]), corder.get(ann["category_id"])
        if v is not None and k is not None:
            anns.append(ann)
            g_v.append(v)
            g_k.append(k)
    bucket: dict[tuple[int, int], list[int]] = defaultdict(list)
    for j, vk in enumerate(zip(g_v, g_k)):
        bucket[vk].append(j)
    return _GroundTruth(
        p,
        vid_ids,
        cat_ids,
        vorder,
        corder,
        [(videos[v]["height"], videos[v]["width"]) for v in vid_ids],
        anns,
        np.array(g_v, np.int64),
        np.array(g_k, np.int64),
        np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        dict(bucket),
    )


_PART_SHIFT = 40  # a result's load key: part << _PART_SHIFT | its index in the part


class _PartWork(NamedTuple):
    """The mask work of one part of the results (a range of videos, or a piece of a split file)
    and of the GT tracks of one range of videos.

    Per kept result (the ``max_dets[-1]`` best of its (video, category) in the part): ``load`` key
    (file order), video / category order index, score, mean truthy area, start of its IoU row in
    ``ious`` (-1 when its bucket has no GT; the row has one entry per GT track of the bucket).
    Per IoU entry: its number of size-mismatched frames and whether its union is empty. ``g_avg``:
    mean truthy areas of the GT tracks of videos ``g_range``. ``malformed``: per side,
    ``(count, load key or GT index of the first, its frame)``.
    """

    n_results: int
    load: np.ndarray
    vid: np.ndarray
    cat: np.ndarray
    score: np.ndarray
    d_avg: np.ndarray
    row: np.ndarray
    ious: np.ndarray
    n_mismatch: np.ndarray
    zero: np.ndarray
    g_range: tuple[int, int]
    g_avg: np.ndarray
    malformed: list[tuple[int, int, int]]


_MASKS_PER_WORKER = 20000  # a worker process pays off from about this many masks


def _result_keys(g: _GroundTruth, results: list) -> tuple[np.ndarray, np.ndarray]:
    """Video and category order indices of ``results`` (-1: not evaluated)."""
    n = len(results)
    r_vid = np.fromiter(map(g.vorder.get, map(_VIDEO_ID, results), itertools.repeat(-1)), np.int64, n)
    r_cat = np.fromiter(map(g.corder.get, map(_CATEGORY_ID, results), itertools.repeat(-1)), np.int64, n)
    return r_vid, r_cat


def _keep_best(
    vid: np.ndarray, cat: np.ndarray, score: np.ndarray, load: np.ndarray, max_det: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, rank) of the ``max_det`` best results of each (video, category), in (video,
    category, rank) order; ties of score keep the load order."""
    order = np.lexsort((load, -score, cat, vid))
    bucket_key = vid[order] * (int(cat.max(initial=0)) + 1) + cat[order]
    starts = np.flatnonzero(np.r_[True, bucket_key[1:] != bucket_key[:-1]]) if order.size else order
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    return order[rank < max_det], rank[rank < max_det]


def _part_work(
    g: _GroundTruth,
    results: list,
    part: int,
    select: np.ndarray | None,
    g_range: tuple[int, int],
) -> _PartWork:
    """The mask work of ``results`` (those of indices ``select``; all: None), part number ``part``,
    against the GT tracks of their buckets, and of the GT tracks of videos ``g_range``."""
    rs = results if select is None else list(map(results.__getitem__, select.tolist()))
    local = np.arange(len(results)) if select is None else select
    r_vid, r_cat = _result_keys(g, rs)
    pos = np.flatnonzero((r_vid >= 0) & (r_cat >= 0))
    d_score = np.array([rs[i]["score"] for i in pos.tolist()], np.float64).reshape(-1)
    d_load = (np.int64(part) << _PART_SHIFT) + local[pos]
    keep, _ = _keep_best(r_vid[pos], r_cat[pos], d_score, d_load, g.p.max_dets[-1])
    pos, d_score, d_load = pos[keep], d_score[keep], d_load[keep]
    d_vid, d_cat = r_vid[pos], r_cat[pos]
    d_bucket: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, vk in enumerate(zip(d_vid.tolist(), d_cat.tolist())):  # in rank order
        d_bucket[vk].append(i)
    keys = sorted(k for k in d_bucket if k in g.bucket)
    lo, hi = g_range
    own = (g.vid >= lo) & (g.vid < hi)
    touched = [g.bucket[k] for k in keys]
    g_idx = np.union1d(np.flatnonzero(own), np.concatenate(touched) if touched else [])
    g_idx = g_idx.astype(np.int64)
    accel = get_accel()
    d_ent = _Entries(
        [rs[i]["segmentations"] for i in pos.tolist()], [g.sizes[v] for v in d_vid.tolist()], accel
    )
    g_ent = _Entries(
        [g.anns[j]["segmentations"] for j in g_idx.tolist()],
        [g.sizes[v] for v in g.vid[g_idx].tolist()],
        accel,
    )
    # every malformed mask of this process stops it before any IoU; each side counts its own
    malformed = [d_ent.malformed_tracks(d_load), g_ent.malformed_tracks(g_idx, own[g_idx])]
    empty = np.zeros(0)
    n_res = len(results)
    if d_ent.malformed.size or g_ent.malformed.size:
        return _PartWork(n_res, *([empty] * 9), g_range, empty, malformed)
    lists = [(d_bucket[k], np.searchsorted(g_idx, g.bucket[k]).tolist()) for k in keys]
    ious, n_mismatch, zero = _bucket_ious(d_ent, g_ent, lists, np.array([v for v, _ in keys], np.int64))
    row = np.full(len(d_vid), -1, np.int64)
    start = 0
    for di, gi in lists:
        row[di] = start + len(gi) * np.arange(len(di))
        start += len(di) * len(gi)
    g_avg = g_ent.mean_truthy_area(len(g_idx))[own[g_idx]]
    d_avg = d_ent.mean_truthy_area(len(d_vid))
    return _PartWork(
        n_res, d_load, d_vid, d_cat, d_score, d_avg, row, ious, n_mismatch, zero, g_range, g_avg, malformed
    )


def _video_parts(
    d_segms: list[list],
    d_vid: np.ndarray,
    g_segms: list[list],
    g_vid: np.ndarray,
    n_videos: int,
    workers: int,
    masks_per_worker: int | None = None,
) -> list[tuple[int, int]]:
    """Ranges ``[lo, hi)`` of video order indices with about equal numbers of frame entries, one
    per worker (fewer when there are under ``masks_per_worker`` per worker, default
    ``_MASKS_PER_WORKER``)."""
    if workers <= 1:
        return [(0, n_videos)]
    frames = np.zeros(n_videos)  # (bincount of no entries gives integers)
    frames += np.bincount(d_vid, np.fromiter(map(len, d_segms), np.float64, len(d_segms)), n_videos)
    frames += np.bincount(g_vid, np.fromiter(map(len, g_segms), np.float64, len(g_segms)), n_videos)
    total = float(frames.sum())
    per_worker = _MASKS_PER_WORKER if masks_per_worker is None else masks_per_worker
    n = max(1, min(int(workers), int(total // max(per_worker, 1)), n_videos))
    if n == 1:
        return [(0, n_videos)]
    cuts = np.searchsorted(np.cumsum(frames), total * np.arange(1, n) / n).tolist()
    bounds = sorted({0, n_videos, *(min(c + 1, n_videos) for c in cuts)})
    return list(zip(bounds[:-1], bounds[1:]))


def _match(
    buckets: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    g_ig: np.ndarray,
    g_crowd: np.ndarray,
    thrs: np.ndarray,
    dtm_out: np.ndarray,
    dtig_out: np.ndarray,
) -> None:
    """Greedy matching (spec §4.5) of buckets with both results and GT, all at once.

    ``buckets``: (ious [D, G], result indices [D] in score order, GT indices [G] in load order).
    ``g_ig``: [A, NG] GT ignore per area range; writes ``dtm_out``/``dtig_out`` [A, T, ND].
    """
    n_area, n_thr = g_ig.shape[0], len(thrs)
    groups: dict[int, list] = defaultdict(list)
    for b in buckets:
        g = b[0].shape[1]
        groups[1 << max(g - 1, 0).bit_length()].append(b)
    for gp, group in groups.items():
        group.sort(key=lambda b: -b[0].shape[0])
        nb = len(group)
        dlen = np.array([b[0].shape[0] for b in group])
        dp = int(dlen[0])
        iou = np.full((nb, dp, gp), -1.0)
        gig = np.zeros((nb, n_area, gp), bool)
        crowd = np.zeros((nb, gp), bool)
        for i, (m, _, gidx) in enumerate(group):
            iou[i, : m.shape[0], : m.shape[1]] = m
            gig[i, :, : len(gidx)] = g_ig[:, gidx]
            crowd[i, : len(gidx)] = g_crowd[gidx]
        gtm = np.zeros((nb, n_area, n_thr, gp), bool)
        dtm = np.zeros((nb, n_area, n_thr, dp), bool)
        dtig = np.zeros((nb, n_area, n_thr, dp), bool)
        n_active = np.searchsorted(-dlen, -np.arange(dp), side="left")  # buckets with D > r (a prefix)
        thr = thrs[None, None, :, None]
        for r in range(dp):
            n = int(n_active[r])
            iou_r = iou[:n, r, None, None, :]
            g_mt = gtm[:n]
            avail = ~g_mt | crowd[:n, None, None, :]
            q = avail & (iou_r >= thr)
            qn = q & ~gig[:n, :, None, :]
            cand = np.where(qn.any(axis=-1, keepdims=True), qn, q)
            hit = cand.any(axis=-1)
            best = gp - 1 - np.argmax(np.where(cand, iou_r, -2.0)[..., ::-1], axis=-1)
            dtm[:n, :, :, r] = hit
            dtig[:n, :, :, r] = hit & np.take_along_axis(gig[:n], best, axis=2)
            cur = np.take_along_axis(g_mt, best[..., None], axis=-1)
            np.put_along_axis(g_mt, best[..., None], cur | hit[..., None], axis=-1)
        for i, (m, didx, _) in enumerate(group):
            dtm_out[:, :, didx] = dtm[i, :, :, : m.shape[0]]
            dtig_out[:, :, didx] = dtig[i, :, :, : m.shape[0]]


def evaluate(
    gt: dict | str | os.PathLike,
    results: list | str | os.PathLike,
    params: EvalParams | None = None,
    workers: int | ForkedWorkers = 1,
) -> EvalResult:
    """Evaluate video instance segmentation ``results`` against ``gt`` (spec §4).

    Args:
        gt: YouTube-VIS annotation dict or JSON path (must contain ``annotations``; not mutated).
        results: list of ``{"video_id", "category_id", "score", "segmentations"}`` or a JSON/zip path.
        params: evaluation parameters (defaults: spec §4.3).
        workers: processes for the mask work (decoding, areas, intersections), split by video:
            a number (this process and ``workers - 1`` children forked here, Linux only) or a
            :class:`~vis_eval.evaluation.workers.ForkedWorkers` forked before the inputs were
            read. The numbers do not depend on it.
            Forking copies only the calling thread: use more than 1 from a process whose other
            threads hold no locks the evaluation needs (a command, a notebook; not from inside a
            multi-threaded server).
    """
    with gc_paused():  # the evaluation builds many small containers; none of them cyclic
        p, gt, results, videos, vid_ids, cat_ids = prepare_inputs(gt, results, params)
        g = _ground_truth(p, gt, videos, vid_ids, cat_ids)
        if isinstance(workers, ForkedWorkers):
            return _evaluate_by_video(g, results, workers)
        with ForkedWorkers(workers) as pool:
            return _evaluate_by_video(g, results, pool)


def _evaluate_by_video(g: _GroundTruth, results: list, workers: ForkedWorkers) -> EvalResult:
    r_vid, r_cat = _result_keys(g, results)
    ev = np.flatnonzero((r_vid >= 0) & (r_cat >= 0))
    parts = _video_parts(
        [results[i]["segmentations"] for i in ev.tolist()],
        r_vid[ev],
        [a["segmentations"] for a in g.anns],
        g.vid,
        len(g.vid_ids),
        workers.size,
    )

    def work(videos: tuple[int, int]) -> _PartWork:
        """The mask work of the results and GT tracks of videos ``[lo, hi)`` (video order indices)."""
        lo, hi = videos
        return _part_work(g, results, 0, ev[(r_vid[ev] >= lo) & (r_vid[ev] < hi)], videos)

    return _combine(g, workers.map(work, parts))


class PieceEvaluation:
    """The evaluation of a results file read in ``n`` pieces, one per process (what ``python -m
    vis_eval.evaluate`` does): process ``k`` reads piece ``k`` (consecutive results of the file,
    in order) and computes :meth:`work` on it; the parent :meth:`combine` s the works of all pieces.
    Each process also does the GT-only work (mean areas, malformed masks) of one range of videos,
    a split that follows from the GT alone. The numbers are those of :func:`evaluate` on the
    whole file.
    """

    def __init__(self, gt: dict, n: int, params: EvalParams | None = None) -> None:
        with gc_paused():
            p, gt, _, videos, vid_ids, cat_ids = prepare_inputs(gt, [], params)
            self.g = _ground_truth(p, gt, videos, vid_ids, cat_ids)
            g_segms = [a["segmentations"] for a in self.g.anns]
            v = len(vid_ids)
            self.g_ranges = _video_parts([], self.g.vid[:0], g_segms, self.g.vid, v, n, masks_per_worker=1)
            self.g_ranges += [(v, v)] * (n - len(self.g_ranges))

    def work(self, piece: list, k: int) -> _PartWork:
        """The mask work of piece ``k`` (results already checked: known videos, the fields)."""
        with gc_paused():
            return _part_work(self.g, piece, k, None, self.g_ranges[k])

    def combine(self, works: list[_PartWork]) -> EvalResult:
        """The evaluation from the works of pieces ``0 .. n-1``, in order."""
        with gc_paused():
            return _combine(self.g, works)


def _combine(g: _GroundTruth, work: list[_PartWork]) -> EvalResult:
    """The evaluation from the mask work of all parts (spec §4.5-4.6)."""
    p, vid_ids, cat_ids = g.p, g.vid_ids, g.cat_ids
    n_thr, n_rec, n_cat = len(p.iou_thrs), len(p.rec_thrs), len(cat_ids)
    n_area, n_md = len(p.area_rngs), len(p.max_dets)
    offsets = np.cumsum([0] + [w.n_results for w in work])  # of the pieces of a split file
    for side, what in enumerate(("result", "annotation")):
        found = [w.malformed[side] for w in work if w.malformed[side][0]]
        if found:
            first = [
                (int(offsets[k >> _PART_SHIFT]) + (k & ((1 << _PART_SHIFT) - 1)) if side == 0 else k, t)
                for _, k, t in found
            ]
            i, t = min(first)
            name = f"result #{i}" if what == "result" else f"annotation id {g.anns[i].get('id')}"
            raise ValueError(
                f"{sum(f[0] for f in found)} malformed {what} mask(s): their RLE runs do not cover their "
                f"H x W pixels (first: {name}, frame {t})"
            )

    # --- the max_dets[-1] best results per (video, category) over all parts
    cat = np.concatenate([w.cat for w in work])
    vid = np.concatenate([w.vid for w in work])
    score = np.concatenate([w.score for w in work])
    load = np.concatenate([w.load for w in work])
    ious_base = np.cumsum([0] + [w.ious.size for w in work])[:-1]
    row = np.concatenate([np.where(w.row >= 0, w.row + b, -1) for w, b in zip(work, ious_base)])
    keep, d_rank = _keep_best(vid, cat, score, load, p.max_dets[-1])
    d_vid, d_cat, d_score, d_row = vid[keep], cat[keep], score[keep], row[keep]
    d_avg = np.concatenate([w.d_avg for w in work])[keep]
    n_det, n_gt = len(d_vid), len(g.vid)

    # --- IoU of the buckets with both results and GT: the rows of the kept results
    d_bucket: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, vk in enumerate(zip(d_vid.tolist(), d_cat.tolist())):  # (video, category, rank) order
        d_bucket[vk].append(i)
    keys = sorted(k for k in d_bucket if k in g.bucket)
    bucket_lists = [(d_bucket[k], g.bucket[k]) for k in keys]
    has = d_row >= 0
    n_cols = np.repeat(
        np.array([len(gi) for _, gi in bucket_lists], np.int64), [len(di) for di, _ in bucket_lists]
    )
    col = np.arange(int(n_cols.sum())) - np.repeat(np.cumsum(n_cols) - n_cols, n_cols)
    take = np.repeat(d_row[has], n_cols) + col
    flat = np.concatenate([w.ious for w in work])[take]
    n_mismatch = int(np.concatenate([w.n_mismatch for w in work])[take].sum())
    n_zero = int(np.count_nonzero(np.concatenate([w.zero for w in work])[take]))
    cuts = np.cumsum([len(di) * len(gi) for di, gi in bucket_lists])[:-1].tolist()
    blocks = [m.reshape(len(di), len(gi)) for m, (di, gi) in zip(np.split(flat, cuts), bucket_lists)]
    pairs = [(m, np.array(di), np.array(gi)) for m, (di, gi) in zip(blocks, bucket_lists)]
    bucket_ious = {(vid_ids[v], cat_ids[k]): m for (v, k), m in zip(keys, blocks)}
    if n_mismatch:
        logger.warning(
            "%d (result, GT) frame pairs have masks of different sizes; they contribute 0 to the video IoU "
            "(result masks must have the video's height x width).",
            n_mismatch,
        )
    if n_zero:
        logger.info("%d (result, GT) pairs have an empty video union (IoU set to 0).", n_zero)

    # --- average areas (spec §4.2): mean of the truthy per-frame areas; GT areas from the JSON
    g_rle_avg = np.zeros(n_gt)
    for w in work:
        lo, hi = w.g_range
        g_rle_avg[(g.vid >= lo) & (g.vid < hi)] = w.g_avg
    g_avg = np.zeros(n_gt)
    for j, ann in enumerate(g.anns):
        areas = ann.get("areas")
        if areas is None:  # not in the JSON: fall back to the mask areas
            g_avg[j] = g_rle_avg[j]
        else:
            truthy = list(filter(None, areas))
            if truthy and set(map(type, truthy)) == {int}:
                g_avg[j] = sum(truthy) / len(truthy)  # exact sum: same value as np.mean
            else:
                g_avg[j] = float(np.mean(truthy)) if truthy else 0.0
    g_crowd, g_cat = g.crowd, g.cat

    # --- area-range flags
    lo = np.array([r[0] for r in p.area_rngs])[:, None]
    hi = np.array([r[1] for r in p.area_rngs])[:, None]
    g_ig = g_crowd[None, :] | (g_avg[None, :] < lo) | (g_avg[None, :] > hi)  # [A, NG]
    d_out = (d_avg[None, :] < lo) | (d_avg[None, :] > hi)  # [A, ND]

    thrs = np.minimum(p.iou_thrs, 1 - 1e-10)
    dtm = np.zeros((n_area, n_thr, n_det), bool)
    dtig = np.zeros((n_area, n_thr, n_det), bool)
    _match(pairs, g_ig, g_crowd, thrs, dtm, dtig)
    dtig |= ~dtm & d_out[:, None, :]

    # --- accumulation
    npig = np.stack(
        [np.bincount(g_cat, weights=~g_ig[a], minlength=n_cat) for a in range(n_area)], axis=1
    ).astype(np.int64)  # [K, A]
    precision = np.full((n_thr, n_rec, n_cat, n_area, n_md), -1.0)
    scores = np.full((n_thr, n_rec, n_cat, n_area, n_md), -1.0)
    recall = np.full((n_thr, n_cat, n_area, n_md), -1.0)
    prec_mkatr = precision.transpose(4, 2, 3, 0, 1)  # views in the accumulation's order
    score_mkatr = scores.transpose(4, 2, 3, 0, 1)
    rec_mkat = recall.transpose(3, 1, 2, 0)
    eps = np.spacing(1)
    acc_order = np.lexsort((d_rank, d_vid, -d_score, d_cat))
    n_at = n_area * n_thr
    tp_all = (dtm & ~dtig).reshape(n_at, n_det).T  # [ND, A*T], row a * T + t
    fp_all = (~dtm & ~dtig).reshape(n_at, n_det).T
    # first value v with v / npig >= each recall threshold: rc[i] >= r  <=>  tp[i] >= v(r), since
    # rc[i] = tp[i] / npig exactly; lets one integer searchsorted serve every (area, IoU) row
    rec = np.asarray(p.rec_thrs, np.float64)[None, None, :]
    n_pos = np.maximum(npig, 1)[:, :, None].astype(np.float64)
    v_thr = np.clip(np.ceil(rec * n_pos).astype(np.int64), 0, npig[:, :, None] + 1)
    for _ in range(2):  # exact: same divisions as searchsorted(arange(npig + 1) / npig, rec_thrs)
        v_thr -= (v_thr > 0) & ((v_thr - 1) / n_pos >= rec)
        v_thr += (v_thr <= npig[:, :, None]) & (v_thr / n_pos < rec)
    v_rows = np.repeat(v_thr, n_thr, axis=1)  # [K, A*T, R]
    npig_rows = np.repeat(npig, n_thr, axis=1)  # [K, A*T]
    has_gt = npig > 0
    cats = np.flatnonzero(has_gt.any(axis=1)).tolist()
    for m, md in enumerate(p.max_dets):
        sel = acc_order[d_rank[acc_order] < md]  # grouped by category, in score order
        kc = d_cat[sel]
        nd_k = np.bincount(kc, minlength=n_cat)
        pos = np.arange(sel.size) - np.r_[0, np.cumsum(nd_k)][:-1][kc]
        # categories in chunks of bounded padded size [k, L, A*T]
        chunks, cur = [], []
        for k in cats:
            if cur and (len(cur) + 1) * max(int(nd_k[cur + [k]].max()), 1) * n_at > (1 << 22):
                chunks.append(cur)
                cur = []
            cur.append(k)
        if cur:
            chunks.append(cur)
        for ks in chunks:
            ks = np.asarray(ks)
            nk = ks.size
            local = np.full(n_cat, -1)
            local[ks] = np.arange(nk)
            use = local[kc] >= 0
            lk, lp = local[kc[use]], pos[use]
            n_d = nd_k[ks]
            L = max(int(n_d.max()), 1)
            tp_i = np.zeros((nk, L, n_at), np.int64)
            fp_i = np.zeros((nk, L, n_at), np.int64)
            tp_i[lk, lp] = tp_all[sel[use]]
            fp_i[lk, lp] = fp_all[sel[use]]
            # position of the u-th true positive of each (category, row): tp first reaches u there
            tp_pos = np.flatnonzero(tp_i.transpose(0, 2, 1)) % L
            tp_i = np.cumsum(tp_i, axis=1).transpose(0, 2, 1)  # [k, A*T, L]
            fp_i = np.cumsum(fp_i, axis=1).transpose(0, 2, 1)
            tp, fp = tp_i.astype(float), fp_i.astype(float)
            last = np.maximum(n_d - 1, 0)
            rc_last = tp[np.arange(nk), :, last] / np.maximum(npig_rows[ks], 1)  # [k, A*T]
            valid = np.arange(L)[None, None, :] < n_d[:, None, None]
            pr = np.where(valid, tp / (fp + tp + eps), 0.0)
            pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
            # inds[k, row, j] = first i with tp[k, row, i] >= v_thr[k, row, j]
            n_tp = tp_i[:, :, -1:]  # [k, A*T, 1]
            v = v_rows[ks]
            reach = (v >= 1) & (v <= n_tp)
            first = np.r_[0, np.cumsum(n_tp.ravel())][:-1].reshape(n_tp.shape)
            at = np.where(reach, first + v - 1, 0)
            inds = np.where(v == 0, 0, L)
            if tp_pos.size:
                inds = np.where(reach, tp_pos[at], inds)
            ok = inds < n_d[:, None, None]
            inds_c = np.minimum(inds, last[:, None, None])
            sc = np.zeros((nk, L))
            sc[lk, lp] = d_score[sel[use]]
            q = np.where(ok, np.take_along_axis(pr, inds_c, axis=2), 0.0).reshape(nk, n_area, n_thr, n_rec)
            ss = np.where(ok, np.take_along_axis(sc[:, None, :], inds_c, axis=2), 0.0).reshape(q.shape)
            g = has_gt[ks][:, :, None]  # [k, A, 1]
            rec_mkat[m, ks] = np.where(g, rc_last.reshape(nk, n_area, n_thr), -1.0)
            prec_mkatr[m, ks] = np.where(g[..., None], q, -1.0)
            score_mkatr[m, ks] = np.where(g[..., None], ss, -1.0)
    stats = summarize(precision, recall, p)
    return EvalResult(p, cat_ids, vid_ids, precision, recall, scores, stats, bucket_ious)
