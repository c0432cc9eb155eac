"""Box-distance IoU losses of FCOS (AdelaiDet flavour, as used by centermask2)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["iou_loss"]


def iou_loss(pred: Tensor, target: Tensor, loss_type: str = "giou", enclose_eps: float = 0.0) -> Tensor:
    """Per-location IoU loss between (P, 4) ``(l, t, r, b)`` distance predictions and targets.

    Both are in the same (stride-normalised) units. The IoU is smoothed with +1 in those units,
    ``IoU = (I + 1) / (U + 1)``, and the GIoU enclosing-area division has no epsilon; both are
    centermask2 behaviour kept for parity (spec 12.2 item 19).

    Args:
        loss_type: ``"giou"`` (1 - GIoU), ``"iou"`` (-log IoU) or ``"linear_iou"`` (1 - IoU).
        enclose_eps: added to the GIoU enclosing area (0 in centermask2; SipMask-benchmark: 1e-7).

    Returns:
        (P,) losses.
    """
    pl, pt, pr, pb = pred.unbind(dim=1)
    gl, gt, gr, gb = target.unbind(dim=1)
    target_area = (gl + gr) * (gt + gb)
    pred_area = (pl + pr) * (pt + pb)
    inter = (torch.minimum(pl, gl) + torch.minimum(pr, gr)) * (torch.minimum(pt, gt) + torch.minimum(pb, gb))
    union = target_area + pred_area - inter
    ious = (inter + 1.0) / (union + 1.0)
    if loss_type == "iou":
        return -torch.log(ious)
    if loss_type == "linear_iou":
        return 1.0 - ious
    if loss_type == "giou":
        enclose = (torch.maximum(pl, gl) + torch.maximum(pr, gr)) * (
            torch.maximum(pt, gt) + torch.maximum(pb, gb)
        ) + enclose_eps
        gious = ious - (enclose - union) / enclose
        return 1.0 - gious
    raise ValueError(f"unknown IoU loss type {loss_type!r}")
