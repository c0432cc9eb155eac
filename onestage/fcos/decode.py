"""FCOS post-processing of one image: per-level candidates, greedy NMS, top detections.

One decoder for CenterMask's FCOS (AdelaiDet) and the SipMask-benchmark head, whose only differences
are options here: the "+1" box convention in NMS, thresholding on ``cls * ctr``, whether the per-level
top-k is sorted (it fixes the order in which equal scores reach NMS) and whether the final cut keeps
every detection tied with the last one.
"""

from __future__ import annotations

import torch
from detectron2.layers import batched_nms
from torch import Tensor

from onestage.layers import plus_one_boxes

__all__ = ["select_fcos_detections"]


def select_fcos_detections(
    level_boxes: list[Tensor],
    level_cls_probs: list[Tensor],
    level_ctr_probs: list[Tensor],
    score_thresh: float,
    pre_nms_topk: int,
    nms_thresh: float,
    post_nms_topk: int,
    *,
    thresh_with_ctr: bool = False,
    plus_one: bool = False,
    sorted_topk: bool = True,
    keep_ties: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per level keep the (location, class) pairs whose class probability (times centerness when
    ``thresh_with_ctr``) exceeds ``score_thresh``, then the ``pre_nms_topk`` best by ``cls * ctr``;
    score them ``sqrt(cls * ctr)``; class-aware NMS; keep the ``post_nms_topk`` best (with
    ``keep_ties`` also every detection scoring as much as the last kept one; ``<= 0`` keeps all).

    Args:
        level_boxes: per level (L_l, 4) decoded boxes.
        level_cls_probs: per level (L_l, C) class probabilities.
        level_ctr_probs: per level (L_l,) centerness probabilities.
    Returns:
        rows (D,) into the concatenated levels, classes (D,), scores (D,), sorted by score.
    """
    rows_all, classes_all, scores_all = [], [], []
    offset = 0
    for boxes, cls_probs, ctr_probs in zip(level_boxes, level_cls_probs, level_ctr_probs, strict=True):
        if thresh_with_ctr:
            cls_probs = cls_probs * ctr_probs[:, None]
        rows, classes = (cls_probs > score_thresh).nonzero(as_tuple=True)
        score = cls_probs[rows, classes]
        if not thresh_with_ctr:
            score = score * ctr_probs[rows]
        if score.numel() > pre_nms_topk:
            score, top = score.topk(pre_nms_topk, sorted=sorted_topk)
            rows, classes = rows[top], classes[top]
        rows_all.append(rows + offset)
        classes_all.append(classes)
        scores_all.append(torch.sqrt(score))
        offset += boxes.shape[0]
    rows, classes, scores = torch.cat(rows_all), torch.cat(classes_all), torch.cat(scores_all)
    boxes = torch.cat(level_boxes)[rows]
    keep = batched_nms(plus_one_boxes(boxes, plus_one), scores, classes, nms_thresh)  # by score
    if keep_ties:
        if 0 < post_nms_topk < keep.numel():
            kth = scores[keep][post_nms_topk - 1]
            keep = keep[scores[keep] >= kth]
    elif post_nms_topk > 0:
        keep = keep[:post_nms_topk]
    return rows[keep], classes[keep], scores[keep]
