"""Parameters, input normalisation and the summary shared by the video AP implementations."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..file_io import read_json

__all__ = [
    "EvalParams",
    "EvalResult",
    "STAT_NAMES",
    "STAT_TABLE",
    "check_gt_fields",
    "load_gt",
    "load_results",
    "prepare_inputs",
    "summarize",
    "format_summary",
]


def _default_iou_thrs() -> np.ndarray:
    return np.linspace(0.5, 0.95, 10)


def _default_rec_thrs() -> np.ndarray:
    return np.linspace(0.0, 1.0, 101)


@dataclass
class EvalParams:
    """Evaluation parameters (spec §4.3). ``vid_ids``/``cat_ids`` default to all GT videos/categories."""

    iou_thrs: np.ndarray = field(default_factory=_default_iou_thrs)
    rec_thrs: np.ndarray = field(default_factory=_default_rec_thrs)
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_rngs: tuple[tuple[float, float], ...] = (
        (0.0, 1e5**2),
        (0.0, 128.0**2),
        (128.0**2, 256.0**2),
        (256.0**2, 1e5**2),
    )
    area_labels: tuple[str, ...] = ("all", "small", "medium", "large")
    vid_ids: list[int] | None = None
    cat_ids: list[int] | None = None

    def __post_init__(self) -> None:
        self.max_dets = tuple(sorted(int(m) for m in self.max_dets))
        self.iou_thrs = np.asarray(self.iou_thrs, dtype=np.float64)
        self.rec_thrs = np.asarray(self.rec_thrs, dtype=np.float64)
        if len(self.area_rngs) != len(self.area_labels):
            raise ValueError("area_rngs and area_labels must have the same length")


@dataclass
class EvalResult:
    """Output of an evaluation: COCO-layout arrays and the 12 summary stats.

    ``precision``/``scores``: ``[T, R, K, A, M]``, ``recall``: ``[T, K, A, M]``, -1 where undefined.
    ``ious``: video IoU matrix per ``(video_id, category_id)`` bucket holding both results and GT
    (rows: results in score order, at most ``max_dets[-1]``; columns: GT tracks in load order).
    """

    params: EvalParams
    cat_ids: list[int]
    vid_ids: list[int]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    stats: np.ndarray
    ious: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """The 12 stats by name (fractions, -1 when undefined)."""
        return {name: float(v) for name, v in zip(STAT_NAMES, self.stats)}

    def per_category_ap(self) -> dict[int, float]:
        """AP (area all, largest maxDets) per category id; NaN when the category has no GT."""
        a = self.params.area_labels.index("all")
        out = {}
        for k, cat in enumerate(self.cat_ids):
            p = self.precision[:, :, k, a, -1]
            p = p[p > -1]
            out[cat] = float(np.mean(p)) if p.size else float("nan")
        return out


# name, metric, iou threshold (None = mean over all), area label, index into max_dets
STAT_TABLE: tuple[tuple[str, str, float | None, str, int], ...] = (
    ("AP", "precision", None, "all", 2),
    ("AP50", "precision", 0.5, "all", 2),
    ("AP75", "precision", 0.75, "all", 2),
    ("APs", "precision", None, "small", 2),
    ("APm", "precision", None, "medium", 2),
    ("APl", "precision", None, "large", 2),
    ("AR1", "recall", None, "all", 0),
    ("AR10", "recall", None, "all", 1),
    ("AR100", "recall", None, "all", 2),
    ("ARs", "recall", None, "small", 2),
    ("ARm", "recall", None, "medium", 2),
    ("ARl", "recall", None, "large", 2),
)
STAT_NAMES: tuple[str, ...] = tuple(row[0] for row in STAT_TABLE)


def summarize(precision: np.ndarray, recall: np.ndarray, params: EvalParams) -> np.ndarray:
    """The 12-entry stats vector (spec §4.7): mean of the entries > -1 of each slice, else -1."""
    stats = np.full(len(STAT_TABLE), -1.0)
    for i, (_, metric, thr, area, mind) in enumerate(STAT_TABLE):
        if area not in params.area_labels or mind >= len(params.max_dets):
            continue
        a = params.area_labels.index(area)
        arr = precision[..., a, mind] if metric == "precision" else recall[..., a, mind]
        if thr is not None:
            t = np.flatnonzero(np.isclose(params.iou_thrs, thr, rtol=0.0, atol=1e-12))
            if t.size == 0:
                continue
            arr = arr[t]
        sel = arr[arr > -1]
        if sel.size:
            stats[i] = np.mean(sel)
    return stats


def format_summary(stats: np.ndarray, params: EvalParams | None = None) -> str:
    """A human-readable table of the 12 stats."""
    params = params or EvalParams()
    lines = []
    for (name, metric, thr, area, mind), value in zip(STAT_TABLE, stats):
        kind = "Average Precision" if metric == "precision" else "Average Recall   "
        if thr is None:
            iou = f"{params.iou_thrs[0]:0.2f}:{params.iou_thrs[-1]:0.2f}"
        else:
            iou = f"{thr:0.2f}"
        md = params.max_dets[mind] if mind < len(params.max_dets) else "-"
        lines.append(f"{name:<6} {kind} IoU={iou:<9} area={area:<6} maxDets={md:<4} {value:7.4f}")
    return "\n".join(lines)


def load_gt(gt: dict | str | os.PathLike) -> dict:
    """A YouTube-VIS annotation dict from a dict or a JSON path / zip (not copied, never mutated)."""
    if not isinstance(gt, dict):
        gt = read_json(gt)
    if not isinstance(gt, dict) or not isinstance(gt.get("videos"), list):
        raise ValueError("ground truth must be a JSON object with a 'videos' list")
    if not isinstance(gt.get("categories"), list):
        raise ValueError("ground truth must have a 'categories' list")
    check_gt_fields(gt)
    return gt


def _missing(items: list, keys: tuple[str, ...], what: str) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"ground truth: {what} #{i} is not an object")
        absent = [k for k in keys if k not in item]
        if absent:
            name = f"{what} #{i}" + (f" (id {item['id']})" if "id" in item else "")
            raise ValueError(f"ground truth: {name} has no {', '.join(repr(k) for k in absent)}")


def check_gt_fields(gt: dict) -> None:
    """Raise a ValueError naming the first video / category / annotation without a required field."""
    if not isinstance(gt.get("videos"), list):
        raise ValueError("ground truth must be a JSON object with a 'videos' list")
    _missing(gt["videos"], ("id", "height", "width"), "video")
    _missing(gt.get("categories") or [], ("id",), "category")
    anns = gt.get("annotations")
    if anns is None:
        return
    if not isinstance(anns, list):
        raise ValueError("ground truth: 'annotations' must be a list")
    _missing(anns, ("video_id", "category_id", "segmentations"), "annotation")
    for i, a in enumerate(anns):
        if not isinstance(a["segmentations"], list):
            raise ValueError(
                f"ground truth: annotation #{i} (id {a.get('id')}): 'segmentations' is not a list"
            )


def load_results(results: list | str | os.PathLike) -> list[dict]:
    """A results list from a list, a JSON path or a zipped submission (see :mod:`vis_eval.file_io`)."""
    if not isinstance(results, list):
        results = read_json(results)
    if not isinstance(results, list):
        raise ValueError("results must be a JSON list of video instances")
    required = ("video_id", "category_id", "score", "segmentations")
    required_set = frozenset(required)
    for i, r in enumerate(results):
        if type(r) is not dict and not isinstance(r, dict):
            raise ValueError(f"result #{i} is not an object")
        if not r.keys() >= required_set:
            key = next(key for key in required if key not in r)
            raise ValueError(f"result #{i} has no '{key}' field")
        if type(r["segmentations"]) is not list and not isinstance(r["segmentations"], list):
            raise ValueError(f"result #{i}: 'segmentations' must be a list (one entry per frame)")
    return results


def prepare_inputs(
    gt: dict | str | os.PathLike, results: list | str | os.PathLike, params: EvalParams | None
) -> tuple[EvalParams, dict, list[dict], dict[int, dict], list[int], list[int]]:
    """Set-up shared by the evaluators: ``(params, gt, results, videos by id, vid_ids, cat_ids)``.

    ``vid_ids``/``cat_ids``: the sorted evaluated ids; a result of a video not in the GT is an error.
    """
    p = params or EvalParams()
    gt = load_gt(gt)
    results = load_results(results)
    videos = {v["id"]: v for v in gt["videos"]}
    for i, r in enumerate(results):
        if r["video_id"] not in videos:
            raise ValueError(f"result #{i}: video_id {r['video_id']} is not in the ground truth")
    vid_ids = sorted(set(p.vid_ids if p.vid_ids is not None else videos))
    cat_ids = sorted(set(p.cat_ids if p.cat_ids is not None else [c["id"] for c in gt["categories"]]))
    return p, gt, results, videos, vid_ids, cat_ids
