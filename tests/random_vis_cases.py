"""Random YouTube-VIS ground truth / results pairs for testing and benchmarking the evaluator."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["random_gt_and_results"]


def _rect_rle(h: int, w: int, box: tuple[int, int, int, int]) -> dict:
    x0, y0, x1, y1 = box
    m = np.zeros((h, w), np.uint8, order="F")
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _uncompressed(rle: dict) -> dict:
    """The same mask as an uncompressed RLE (``counts`` a list of run lengths, 0-run first)."""
    m = mask_util.decode(rle).ravel(order="F")
    change = np.flatnonzero(np.diff(m)) + 1  # starts of the runs after the first
    counts = np.diff(np.r_[0, change, m.size]).tolist()
    if m[0]:  # the mask starts with 1s: an empty 0-run first
        counts = [0] + counts
    return {"size": list(rle["size"]), "counts": counts}


def random_gt_and_results(
    rng: np.random.Generator,
    n_videos: int = 6,
    n_cats: int = 4,
    size_range: tuple[int, int] = (20, 60),
    len_range: tuple[int, int] = (1, 6),
    gt_per_video: tuple[int, int] = (0, 4),
    dets_per_gt: tuple[int, int] = (0, 3),
    false_pos: tuple[int, int] = (0, 3),
    p_null: float = 0.2,
    p_crowd: float = 0.1,
    quirks: bool = True,
    cats_per_video: int | None = None,
    obj_frac: tuple[float, float] = (0.0, 1.0),
) -> tuple[dict, list[dict]]:
    """A random GT dict and results list exercising the evaluator's rules.

    ``cats_per_video`` limits each video to that many categories (several instances per category);
    ``obj_frac`` bounds object sizes as a fraction of the frame size. With ``quirks``: tied scores, crowd GT, GT without ``areas``, polygon / uncompressed GT masks,
    empty masks, results with too few / too many frames and with a wrong mask size, unknown categories.
    """
    vid_ids = rng.permutation(np.arange(1, 3 * n_videos + 1))[:n_videos].tolist()
    videos, annotations, results = [], [], []
    ann_id = 1
    for vid in vid_ids:
        h, w = (int(x) for x in rng.integers(size_range[0], size_range[1] + 1, size=2))
        length = int(rng.integers(len_range[0], len_range[1] + 1))
        videos.append(
            {
                "id": int(vid),
                "height": h,
                "width": w,
                "length": length,
                "file_names": [f"v{vid}/{t:05d}.jpg" for t in range(length)],
            }
        )
        tracks = []
        vcats = np.arange(1, n_cats + 1)
        if cats_per_video is not None:
            vcats = rng.choice(vcats, size=min(cats_per_video, n_cats), replace=False)
        lo_w, hi_w = max(2, int(obj_frac[0] * w)), max(2, int(obj_frac[1] * w))
        lo_h, hi_h = max(2, int(obj_frac[0] * h)), max(2, int(obj_frac[1] * h))
        for _ in range(int(rng.integers(gt_per_video[0], gt_per_video[1] + 1))):
            cat = int(rng.choice(vcats))
            bw, bh = int(rng.integers(lo_w, hi_w + 1)), int(rng.integers(lo_h, hi_h + 1))
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            boxes = []
            for _t in range(length):
                if rng.random() < p_null:
                    boxes.append(None)
                    continue
                dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
                boxes.append((x + dx, y + dy, x + dx + bw, y + dy + bh))
            segs, bbs, areas = [], [], []
            for b in boxes:
                if b is None:
                    segs.append(None)
                    bbs.append(None)
                    areas.append(None)
                    continue
                rle = _rect_rle(h, w, b)
                a = int(mask_util.area(rle))
                seg: object = rle
                if quirks and rng.random() < 0.1:
                    seg = _uncompressed(rle)
                elif quirks and rng.random() < 0.1 and a > 0:
                    x0, y0, x1, y1 = (float(c) for c in mask_util.toBbox(rle))
                    x1, y1 = x0 + x1, y0 + y1
                    seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                segs.append(seg)
                bbs.append([float(c) for c in mask_util.toBbox(rle)])
                areas.append(a)
            ann = {
                "id": ann_id,
                "video_id": int(vid),
                "category_id": cat,
                "iscrowd": int(quirks and rng.random() < p_crowd),
                "segmentations": segs,
                "bboxes": bbs,
                "areas": areas,
                "height": h,
                "width": w,
                "length": length,
            }
            if quirks and rng.random() < 0.05:
                del ann["areas"]
            annotations.append(ann)
            ann_id += 1
            tracks.append((cat, boxes))
        # results: jittered copies of GT tracks plus false positives
        sources = []
        for cat, boxes in tracks:
            for _ in range(int(rng.integers(dets_per_gt[0], dets_per_gt[1] + 1))):
                sources.append((cat, boxes))
        for _ in range(int(rng.integers(false_pos[0], false_pos[1] + 1))):
            bw, bh = int(rng.integers(lo_w, hi_w + 1)), int(rng.integers(lo_h, hi_h + 1))
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            cat = int(rng.choice(vcats)) if rng.random() < 0.5 else int(rng.integers(1, n_cats + 1))
            sources.append((cat, [(x, y, x + bw, y + bh)] * length))
        for cat, boxes in sources:
            segs = []
            for b in boxes:
                if b is None or rng.random() < p_null / 2:
                    segs.append(None if rng.random() < 0.9 else _rect_rle(h, w, (0, 0, 0, 0)))
                    continue
                j = rng.integers(-3, 4, size=4)
                segs.append(_rect_rle(h, w, tuple(int(c + d) for c, d in zip(b, j))))
            if quirks:
                u = rng.random()
                if u < 0.05 and segs:
                    segs = segs[: int(rng.integers(0, len(segs)))]
                elif u < 0.1:
                    segs = segs + [_rect_rle(h, w, (0, 0, w, h))]
                elif u < 0.13 and segs:
                    t = int(rng.integers(0, len(segs)))
                    segs[t] = _rect_rle(h, w + 1, (0, 0, w, h))
            if quirks and rng.random() < 0.05:
                cat = n_cats + 1  # not a GT category: ignored
            score = float(rng.random())
            if quirks and rng.random() < 0.5:
                score = round(score, 1)  # ties
            results.append({"video_id": int(vid), "category_id": cat, "score": score, "segmentations": segs})
    rng.shuffle(results)
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_cats + 1)]
    gt = {"videos": videos, "categories": categories, "annotations": annotations}
    return gt, results
