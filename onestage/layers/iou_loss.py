"""IoU-family losses of dense detectors on ``(l, t, r, b)`` distances from a common point.

Boxes ``(x1, y1, x2, y2)`` work too, as distances from the origin ``(-x1, -y1, x2, y2)``
(:func:`boxes_as_distances`): every quantity below is translation invariant. Two authors'
conventions are parameters: the inclusive "+1" pixel widths of mmdet / maskrcnn-benchmark
(``plus_one``), and AdelaiDet's (centermask2's) smoothing ``IoU = (I + 1) / (U + 1)`` in the
distances' own units (``smooth=1``, spec centermask 12.2 item 19).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["boxes_as_distances", "iou_loss"]

_LOSS_TYPES = ("iou", "linear_iou", "giou", "diou")


def boxes_as_distances(boxes: Tensor) -> Tensor:
    """(P, 4) ``(x1, y1, x2, y2)`` -> (P, 4) distances from the origin ``(-x1, -y1, x2, y2)``."""
    return boxes * boxes.new_tensor([-1.0, -1.0, 1.0, 1.0])


def iou_loss(
    pred: Tensor,
    target: Tensor,
    loss_type: str = "giou",
    *,
    plus_one: bool = False,
    smooth: float = 0.0,
    clamp_overlap: bool = True,
    min_iou: float = 0.0,
    enclose_eps: float = 0.0,
    enclose_min: float = 0.0,
) -> Tensor:
    """Per-pair IoU loss between (P, 4) ``(l, t, r, b)`` predictions and targets (same units).

    Args:
        loss_type: ``"iou"`` (-log IoU), ``"linear_iou"`` (1 - IoU), ``"giou"`` (1 - GIoU) or
            ``"diou"`` (1 - IoU + centre distance^2 / enclosing diagonal^2).
        plus_one: widths and heights are ``l + r + 1`` (the authors' inclusive pixel boxes).
        smooth: added to intersection and union (AdelaiDet / centermask2: 1).
        clamp_overlap: clamp negative overlap widths to 0 (mmdet); AdelaiDet does not (its ReLU'd
            distances never overlap negatively, and the clamp would zero the gradient at 0 overlap).
        min_iou: ``-log`` is taken of ``max(IoU, min_iou)`` (mmdet: 1e-6).
        enclose_eps: added to the GIoU enclosing area / DIoU squared diagonal (SipMask-benchmark: 1e-7).
        enclose_min: the DIoU squared diagonal is clamped to at least this (STMask: 1e-10).

    Returns:
        (P,) losses.
    """
    if loss_type not in _LOSS_TYPES:
        raise ValueError(f"unknown IoU loss type {loss_type!r}; expected one of {_LOSS_TYPES}")
    e = 1.0 if plus_one else 0.0
    pl, pt, pr, pb = pred.unbind(dim=1)
    gl, gt, gr, gb = target.unbind(dim=1)
    target_area = (gl + gr + e) * (gt + gb + e)
    pred_area = (pl + pr + e) * (pt + pb + e)
    inter_w = torch.minimum(pl, gl) + torch.minimum(pr, gr) + e
    inter_h = torch.minimum(pt, gt) + torch.minimum(pb, gb) + e
    if clamp_overlap:
        inter_w, inter_h = inter_w.clamp(min=0), inter_h.clamp(min=0)
    inter = inter_w * inter_h
    union = target_area + pred_area - inter
    ious = (inter + smooth) / (union + smooth)
    if loss_type == "iou":
        return -torch.log(ious.clamp(min=min_iou) if min_iou > 0 else ious)
    if loss_type == "linear_iou":
        return 1.0 - ious
    enclose_w = torch.maximum(pl, gl) + torch.maximum(pr, gr) + e
    enclose_h = torch.maximum(pt, gt) + torch.maximum(pb, gb) + e
    if loss_type == "giou":
        enclose = enclose_w * enclose_h + enclose_eps
        return 1.0 - (ious - (enclose - union) / enclose)
    # centres relative to the common point: ((r - l) / 2, (b - t) / 2)
    dx = ((pr - pl) - (gr - gl)) / 2
    dy = ((pb - pt) - (gb - gt)) / 2
    diag = enclose_w**2 + enclose_h**2 + enclose_eps
    if enclose_min > 0:
        diag = diag.clamp(min=enclose_min)
    return 1.0 - ious + (dx**2 + dy**2) / diag
