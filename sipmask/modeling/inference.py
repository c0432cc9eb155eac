"""SipMask detection selection (spec §3): the high-accuracy per-class NMS path, the real-time Fast NMS
path and the SipMask-benchmark FCOS post-processor. All functions work on one image.
"""

from __future__ import annotations

import torch
from detectron2.layers import batched_nms
from torch import Tensor

__all__ = [
    "benchmark_select",
    "decode_boxes",
    "fast_nms",
    "multiclass_nms",
    "pairwise_iou_batched",
    "plus_one_boxes",
    "pre_nms_topk_locations",
]


def decode_boxes(locations: Tensor, distances: Tensor) -> Tensor:
    """(L, 2) ``(x, y)`` and (L, 4) pixel ``(l, t, r, b)`` -> (L, 4) ``(x - l, y - t, x + r, y + b)``."""
    return torch.cat([locations - distances[:, :2], locations + distances[:, 2:]], dim=1)


def pre_nms_topk_locations(cls_probs: Tensor, ctr_probs: Tensor, k: int) -> Tensor:
    """mmdet per-level pre-NMS selection: the indices of the ``k`` locations with the largest
    ``max_c(cls_c * ctr)`` (all locations, in order, when there are at most ``k``)."""
    num = cls_probs.shape[0]
    if num <= k:
        return torch.arange(num, device=cls_probs.device)
    return (cls_probs * ctr_probs[:, None]).amax(dim=1).topk(k).indices


def plus_one_boxes(boxes: Tensor, plus_one: bool = True) -> Tensor:
    """Inclusive ``(x1, y1, x2, y2)`` -> continuous ``(x1, y1, x2 + 1, y2 + 1)`` when ``plus_one``:
    the continuous IoU / area of the result is the "+1" IoU / area of ``boxes``."""
    if not plus_one:
        return boxes
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def multiclass_nms(
    boxes: Tensor,
    cls_probs: Tensor,
    ctr_probs: Tensor,
    score_thresh: float,
    nms_thresh: float,
    max_dets: int,
    plus_one: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """High-accuracy path (§3.1 step 5-6): threshold the raw class probability, score
    ``cls * ctr``, greedy NMS per class, keep the top ``max_dets``.

    Args:
        boxes: (L, 4); cls_probs: (L, C); ctr_probs: (L,).
    Returns:
        rows (D,) into the L locations, classes (D,), scores (D,), sorted by score.
    """
    rows, classes = torch.nonzero(cls_probs > score_thresh, as_tuple=True)
    scores = cls_probs[rows, classes] * ctr_probs[rows]
    keep = batched_nms(plus_one_boxes(boxes[rows], plus_one), scores, classes, nms_thresh)[:max_dets]
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
) -> tuple[Tensor, Tensor, Tensor]:
    """Real-time path (§3.2 steps 5-7): YOLACT-style Fast NMS over all classes at once.

    A box is dropped when *any* higher-scored box of its class top-``top_k`` overlaps it by more than
    ``iou_thresh``, suppressed or not, or when its score is ``<= score_thresh``.

    Args:
        boxes: (L, 4); scores: (L, C) = ``cls * ctr``.
    Returns:
        rows (D,), classes (D,), scores (D,), sorted by score, D <= ``max_dets``.
    """
    num, num_classes = scores.shape
    k = min(top_k, num)
    if k == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return empty, empty, scores.new_zeros(0)
    top_scores, idx = scores.t().sort(dim=1, descending=True)
    top_scores, idx = top_scores[:, :k], idx[:, :k]  # (C, k)
    iou = pairwise_iou_batched(boxes[idx]).triu(diagonal=1)
    iou_max = iou.amax(dim=1)  # (C, k): max IoU with any higher-scored box
    keep = (iou_max <= iou_thresh) & (top_scores > score_thresh)
    classes = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    rows, kept_scores = idx[keep], top_scores[keep]
    order = kept_scores.argsort(descending=True)[:max_dets]
    return rows[order], classes[order], kept_scores[order]


def benchmark_select(
    level_boxes: list[Tensor],
    level_cls: list[Tensor],
    level_ctr: list[Tensor],
    score_thresh: float,
    pre_nms_topk: int,
    nms_thresh: float,
    max_dets: int,
    plus_one: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """SipMask-benchmark FCOS post-processing (§3.4): per level keep (location, class) pairs with
    ``cls > score_thresh``, the top ``pre_nms_topk`` by ``cls * ctr``; score ``sqrt(cls * ctr)``;
    class-aware NMS; top ``max_dets``.

    Args: per-level boxes (L_l, 4), class probabilities (L_l, C), centerness (L_l,).
    Returns: rows into the concatenated levels, classes, scores (sorted by score).
    """
    rows_all, cls_all, scores_all = [], [], []
    offset = 0
    for boxes, cls_probs, ctr in zip(level_boxes, level_cls, level_ctr):
        rows, classes = torch.nonzero(cls_probs > score_thresh, as_tuple=True)
        s = cls_probs[rows, classes] * ctr[rows]
        if s.numel() > pre_nms_topk:
            top = s.topk(pre_nms_topk).indices
            rows, classes, s = rows[top], classes[top], s[top]
        rows_all.append(rows + offset)
        cls_all.append(classes)
        scores_all.append(torch.sqrt(s))
        offset += boxes.shape[0]
    rows, classes, scores = torch.cat(rows_all), torch.cat(cls_all), torch.cat(scores_all)
    boxes = torch.cat(level_boxes)[rows]
    keep = batched_nms(plus_one_boxes(boxes, plus_one), scores, classes, nms_thresh)[:max_dets]
    return rows[keep], classes[keep], scores[keep]
