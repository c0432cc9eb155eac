"""Non-maximum suppression of dense detectors, on one image: greedy multiclass NMS and YOLACT's Fast
NMS (class-wise and cross-class)."""

from __future__ import annotations

import torch
from detectron2.layers import batched_nms
from torch import Tensor

from .boxes import plus_one_boxes

__all__ = ["fast_nms", "multiclass_nms", "pairwise_iou_batched", "top_batched_nms"]

# Candidates a CPU top_batched_nms starts from: more than 1000, so that torchvision's batched_nms runs
# its per-class NMS on them, as it does on any larger set (on fewer it offsets boxes by class, which
# rounds their IoUs differently).
_TOP_CANDIDATES = 1024


def top_batched_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, nms_thresh: float, max_dets: int
) -> Tensor:
    """``batched_nms(boxes, scores, classes, nms_thresh)[:max_dets]`` (``max_dets <= 0``: all), found on
    the best-scored candidates first.

    Greedy NMS keeps or drops a box by the boxes scored above it, so NMS on every candidate scoring at
    least some ``t`` keeps exactly the boxes of the full NMS that score at least ``t``; once that gives
    ``max_dets`` boxes, no lower-scored candidate can enter the result. On CPU the candidates above the
    1024-th best score are tried first, then 4 times as many, ... (the same boxes, in the same order,
    for as much as ties allow); other devices run the full NMS.
    """
    num = scores.numel()
    if max_dets > 0 and boxes.device.type == "cpu":
        k = _TOP_CANDIDATES
        while k < num:
            kth = scores.topk(k, sorted=False).values.min()
            top = torch.nonzero(scores >= kth).squeeze(1)  # ties of the k-th included, in input order
            keep = batched_nms(boxes[top], scores[top], classes[top], nms_thresh)
            if keep.numel() >= max_dets:
                return top[keep[:max_dets]]
            k *= 4
    keep = batched_nms(boxes, scores, classes, nms_thresh)
    return keep[:max_dets] if max_dets > 0 else keep


def multiclass_nms(
    boxes: Tensor,
    cls_probs: Tensor,
    ctr_probs: Tensor,
    score_thresh: float,
    nms_thresh: float,
    max_dets: int,
    plus_one: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Threshold the raw class probability, score ``cls * ctr``, greedy NMS per class, keep the top
    ``max_dets`` (mmdet's ``multiclass_nms`` with a centerness factor).

    Args:
        boxes: (L, 4); cls_probs: (L, C); ctr_probs: (L,).
    Returns:
        rows (D,) into the L locations, classes (D,), scores (D,), sorted by score.
    """
    rows, classes = torch.nonzero(cls_probs > score_thresh, as_tuple=True)
    scores = cls_probs[rows, classes] * ctr_probs[rows]
    keep = top_batched_nms(plus_one_boxes(boxes[rows], plus_one), scores, classes, nms_thresh, max_dets)
    return rows[keep], classes[keep], scores[keep]


def pairwise_iou_batched(boxes: Tensor) -> Tensor:
    """(C, K, 4) -> (C, K, K) continuous IoU (no "+1") of every pair within each row."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    score_thresh: float,
    iou_thresh: float,
    top_k: int = 200,
    max_dets: int = 100,
    cross_class: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fast NMS (YOLACT): among the ``top_k`` highest-scored boxes a box is dropped when *any*
    higher-scored one overlaps it by more than ``iou_thresh``, suppressed or not, or when its score
    is ``<= score_thresh``. Class-wise (the ``top_k`` of each class suppress within their class) or,
    with ``cross_class`` (STMask's default), each box takes its best class and the ``top_k`` boxes
    suppress each other whatever their classes.

    Args:
        boxes: (L, 4); scores: (L, C).
    Returns:
        rows (D,), classes (D,), scores (D,), sorted by score, D <= ``max_dets``.
    """
    num, num_classes = scores.shape
    k = min(top_k, num)
    if k == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return empty, empty, scores.new_zeros(0)
    if cross_class:
        best, best_class = scores.max(dim=1)
        groups = best[None]  # (1, L): one group holding every box
    else:
        groups = scores.t()  # (C, L): one group per class
    top_scores, idx = groups.sort(dim=1, descending=True)
    top_scores, idx = top_scores[:, :k], idx[:, :k]  # (G, k)
    iou = pairwise_iou_batched(boxes[idx]).triu(diagonal=1)
    iou_max = iou.amax(dim=1)  # (G, k): max IoU with any higher-scored box of the group
    keep = (iou_max <= iou_thresh) & (top_scores > score_thresh)
    rows, kept_scores = idx[keep], top_scores[keep]
    if cross_class:
        classes = best_class[rows]
    else:
        classes = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    order = kept_scores.argsort(descending=True)[:max_dets]
    return rows[order], classes[order], kept_scores[order]
