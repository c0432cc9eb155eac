"""Plain reference implementation of the YouTube-VIS video AP (spec §4).

A direct transcription of the algorithm's loop structure (per bucket, per result/GT pair, per frame,
per IoU threshold, per result, per GT), written for clarity, not speed. It is the oracle that the
fast implementation (:mod:`vis_eval.evaluation.ytviseval`) is tested against and the baseline of
``tools/benchmark_vis_eval.py``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pycocotools.mask as mask_util

from ..rle import segm_to_rle
from .params import EvalParams, EvalResult, prepare_inputs, summarize

__all__ = ["reference_evaluate"]

logger = logging.getLogger(__name__)


def _avg_area(areas: list) -> float:
    truthy = [a for a in areas if a]
    return float(np.mean(truthy)) if truthy else 0.0


def _sort_by_score(dts: list[dict]) -> list[dict]:
    order = np.argsort([-d["score"] for d in dts], kind="mergesort")
    return [dts[i] for i in order]


def _video_iou(d: dict, g: dict) -> float:
    inter, union = 0, 0
    for ds, gs in zip(d["rles"], g["rles"]):
        if ds and gs:
            inter += int(mask_util.area(mask_util.merge([ds, gs], intersect=True)))
            union += int(mask_util.area(mask_util.merge([ds, gs], intersect=False)))
        elif gs:
            union += int(mask_util.area(gs))
        elif ds:
            union += int(mask_util.area(ds))
    if union > 0:
        return inter / union
    logger.debug("Mask sizes in video %s may not match!", g["video_id"])
    return 0.0


def reference_evaluate(
    gt: dict | str | os.PathLike,
    results: list | str | os.PathLike,
    params: EvalParams | None = None,
) -> EvalResult:
    """Evaluate ``results`` against ``gt`` with plain Python loops (same output as ``evaluate``)."""
    p, gt, results, videos, vid_ids, cat_ids = prepare_inputs(gt, results, params)
    vid_set, cat_set = set(vid_ids), set(cat_ids)

    # --- load GT and results (spec §4.1, §4.2)
    gts: dict[tuple[int, int], list[dict]] = {}
    for ann in gt.get("annotations") or []:
        if ann["video_id"] not in vid_set or ann["category_id"] not in cat_set:
            continue
        v = videos[ann["video_id"]]
        rles = [segm_to_rle(s, v["height"], v["width"]) if s else None for s in ann["segmentations"]]
        areas = ann.get("areas")
        if areas is None:
            areas = [int(mask_util.area(r)) if r else None for r in rles]
        crowd = int(bool(ann.get("iscrowd", 0)))
        g = {
            "id": ann["id"],
            "video_id": ann["video_id"],
            "rles": rles,
            "avg_area": _avg_area(areas),
            "iscrowd": crowd,
            "ignore": crowd,
        }
        gts.setdefault((ann["video_id"], ann["category_id"]), []).append(g)

    dts: dict[tuple[int, int], list[dict]] = {}
    for k, r in enumerate(results):
        if r["video_id"] not in vid_set or r["category_id"] not in cat_set:
            continue
        v = videos[r["video_id"]]
        rles = [segm_to_rle(s, v["height"], v["width"]) if s else None for s in r["segmentations"]]
        areas = [int(mask_util.area(x)) if x else None for x in rles]
        bboxes = r.get("bboxes") or []
        if len(bboxes) < len(rles):  # spec §4.1: loadRes derives the per-frame boxes as well
            bboxes = [mask_util.toBbox(x).tolist() if x else None for x in rles]
        d = {"id": k + 1, "score": r["score"], "rles": rles, "bboxes": bboxes, "avg_area": _avg_area(areas)}
        dts.setdefault((r["video_id"], r["category_id"]), []).append(d)

    # --- IoU per (video, category) bucket (spec §4.4)
    max_det = p.max_dets[-1]
    ious: dict[tuple[int, int], np.ndarray] = {}
    for vid in vid_ids:
        for cat in cat_ids:
            g = gts.get((vid, cat), [])
            d = dts.get((vid, cat), [])
            if not g and not d:
                continue
            d = _sort_by_score(d)[:max_det]
            mat = np.zeros((len(d), len(g)))
            for i, dd in enumerate(d):
                for j, gg in enumerate(g):
                    mat[i, j] = _video_iou(dd, gg)
            ious[vid, cat] = mat

    # --- matching (spec §4.5); records indexed [k][a][v]
    n_iou = len(p.iou_thrs)
    records: list[list[list[dict | None]]] = []
    for cat in cat_ids:
        per_area = []
        for lo, hi in p.area_rngs:
            per_vid = []
            for vid in vid_ids:
                g = gts.get((vid, cat), [])
                d = dts.get((vid, cat), [])
                if not g and not d:
                    per_vid.append(None)
                    continue
                g_ig = [1 if (gg["ignore"] or gg["avg_area"] < lo or gg["avg_area"] > hi) else 0 for gg in g]
                g_order = np.argsort(g_ig, kind="mergesort")
                g = [g[i] for i in g_order]
                g_ig = [g_ig[i] for i in g_order]
                d = _sort_by_score(d)[:max_det]
                mat = ious[vid, cat][:, g_order] if len(g) and len(d) else np.zeros((len(d), len(g)))
                gtm = np.zeros((n_iou, len(g)))
                dtm = np.zeros((n_iou, len(d)))
                dt_ig = np.zeros((n_iou, len(d)))
                for ti, thr in enumerate(p.iou_thrs):
                    for di, dd in enumerate(d):
                        best = min(thr, 1 - 1e-10)
                        m = -1
                        for gi, gg in enumerate(g):
                            if gtm[ti, gi] > 0 and not gg["iscrowd"]:
                                continue
                            if m > -1 and g_ig[m] == 0 and g_ig[gi] == 1:
                                break
                            if mat[di, gi] < best:
                                continue
                            best = mat[di, gi]
                            m = gi
                        if m == -1:
                            continue
                        dt_ig[ti, di] = g_ig[m]
                        dtm[ti, di] = g[m]["id"]
                        gtm[ti, m] = dd["id"]
                for di, dd in enumerate(d):
                    if dd["avg_area"] < lo or dd["avg_area"] > hi:
                        for ti in range(n_iou):
                            if dtm[ti, di] == 0:
                                dt_ig[ti, di] = 1
                per_vid.append(
                    {
                        "scores": [dd["score"] for dd in d],
                        "dtm": dtm,
                        "dt_ig": dt_ig,
                        "g_ig": g_ig,
                    }
                )
            per_area.append(per_vid)
        records.append(per_area)

    # --- accumulation (spec §4.6)
    n_rec, n_cat, n_area, n_md = len(p.rec_thrs), len(cat_ids), len(p.area_rngs), len(p.max_dets)
    precision = -np.ones((n_iou, n_rec, n_cat, n_area, n_md))
    recall = -np.ones((n_iou, n_cat, n_area, n_md))
    scores = -np.ones((n_iou, n_rec, n_cat, n_area, n_md))
    for k in range(n_cat):
        for a in range(n_area):
            recs = [e for e in records[k][a] if e is not None]
            if not recs:
                continue
            for m, md in enumerate(p.max_dets):
                dt_scores = np.concatenate([np.asarray(e["scores"][:md], dtype=np.float64) for e in recs])
                order = np.argsort(-dt_scores, kind="mergesort")
                sorted_scores = dt_scores[order]
                dtm = np.concatenate([e["dtm"][:, :md] for e in recs], axis=1)[:, order]
                dt_ig = np.concatenate([e["dt_ig"][:, :md] for e in recs], axis=1)[:, order]
                npig = sum(int(np.count_nonzero(np.asarray(e["g_ig"]) == 0)) for e in recs)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(float)
                fp_sum = np.cumsum(fps, axis=1).astype(float)
                for t in range(n_iou):
                    tp, fp = tp_sum[t], fp_sum[t]
                    nd = len(tp)
                    rc = tp / npig
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    inds = np.searchsorted(rc, p.rec_thrs, side="left")
                    q = [0.0] * n_rec
                    ss = [0.0] * n_rec
                    for ri, pi in enumerate(inds):
                        if pi >= nd:
                            break
                        q[ri] = pr[pi]
                        ss[ri] = sorted_scores[pi]
                    precision[t, :, k, a, m] = q
                    scores[t, :, k, a, m] = ss
    stats = summarize(precision, recall, p)
    ious = {key: m for key, m in ious.items() if m.size}
    return EvalResult(p, cat_ids, vid_ids, precision, recall, scores, stats, ious)
