"""SipMask losses (spec §2.2-2.7): box IoU losses, mask alignment weighting, re-scoring loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor
from torchvision.ops import nms

from onestage.layers import iou_loss, plus_one_boxes

from .crop_split import crop_split, crop_split_gt

__all__ = [
    "box_iou_pairwise",
    "giou_loss_benchmark",
    "iou_loss_plus1",
    "mask_alignment_loss",
    "rescoring_loss",
    "rescoring_targets",
]


def iou_loss_plus1(pred: Tensor, target: Tensor, weight: Tensor, plus_one: bool = True) -> Tensor:
    """mmdet IoU loss on ``(l, t, r, b)`` distances in stride units with the "+1" convention.

    ``-ln(max(IoU, 1e-6))`` per positive, weighted by ``weight`` (centerness targets) and divided by
    ``sum(weight)``. Returns 0 (with a graph) when there are no positives.
    """
    if pred.numel() == 0:
        return pred.sum() * 0
    loss = iou_loss(pred, target, "iou", plus_one=plus_one, min_iou=1e-6)
    return (loss * weight).sum() / weight.sum()


def giou_loss_benchmark(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """SipMask-benchmark GIoU loss on stride-unit distances (AdelaiDet flavour, enclosing-area
    epsilon 1e-7); returns the weighted *sum*."""
    if pred.numel() == 0:
        return pred.sum() * 0
    loss = iou_loss(pred, target, "giou", smooth=1.0, clamp_overlap=False, enclose_eps=1e-7)
    return (loss * weight).sum()


def box_iou_pairwise(a: Tensor, b: Tensor, plus_one: bool = True) -> Tensor:
    """Element-wise IoU of (N, 4) boxes ``a[i]`` and ``b[i]``; "+1" widths when ``plus_one``."""
    return matched_pairwise_iou(Boxes(plus_one_boxes(a, plus_one)), Boxes(plus_one_boxes(b, plus_one)))


def mask_alignment_loss(
    basis: Tensor,
    coeffs: Tensor,
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    gt_masks: Tensor,
    cls_probs: Tensor,
    plus_one: bool = True,
    variant: str = "mmdet",
) -> tuple[Tensor, Tensor, Tensor]:
    """Mask loss of one image with mask-alignment weighting (spec §2.5, steps 2-7).

    Args:
        basis: (K, H_m, W_m) basis masks.
        coeffs: (P, 4K) coefficients of the positives.
        pred_boxes: (P, 4) predicted boxes at mask-grid scale (input boxes / 2), detached.
        gt_boxes: (P, 4) the assigned gt boxes at mask-grid scale.
        gt_masks: (P, H_m, W_m) the assigned gt masks at mask resolution (0/1 float).
        cls_probs: (P,) detached probability of the assigned class.
        variant: "mmdet" (all positives, ω with +1e-4) or "benchmark" (NMS-0.9 subset, no eps).
    Returns:
        the image loss ``L_i`` (0 with a graph when no positive survives the area filter), and the
        kept positives' soft masks (P', H_m, W_m) and kept indices (P',) for the re-scoring loss.
    """
    pred_boxes = pred_boxes.detach()
    w = pred_boxes[:, 2] - pred_boxes[:, 0]
    h = pred_boxes[:, 3] - pred_boxes[:, 1]
    keep = torch.nonzero(w * h > 1.0).squeeze(1)
    if keep.numel() == 0:
        empty = basis.new_zeros((0,) + tuple(basis.shape[1:]))
        return (basis.sum() + coeffs.sum()) * 0, empty, keep
    boxes, iou_w = pred_boxes[keep], box_iou_pairwise(gt_boxes[keep], pred_boxes[keep], plus_one)
    weights = (cls_probs[keep] * iou_w).detach()
    if variant == "mmdet":
        omega = weights / (weights.sum() + 1e-4) * keep.numel()
    elif variant == "benchmark":
        omega = weights / weights.sum() * keep.numel()
        sub = nms(plus_one_boxes(boxes, plus_one), cls_probs[keep].float(), 0.9)
        keep, boxes, omega = keep[sub], boxes[sub], omega[sub]
    else:
        raise ValueError(f"MASK_LOSS_VARIANT must be 'mmdet' or 'benchmark', got {variant!r}")
    # float32, outside autocast: binary_cross_entropy refuses to run under CUDA autocast
    with torch.autocast(device_type=basis.device.type, enabled=False):
        masks = crop_split(basis.float(), coeffs[keep].float(), boxes)
        target = crop_split_gt(gt_masks[keep].float(), boxes)
        bce = F.binary_cross_entropy(masks, target, reduction="none").sum(dim=(1, 2))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    loss = (omega * bce / area).sum() / keep.numel()
    return loss, masks, keep


def rescoring_targets(masks: Tensor, gt_masks: Tensor, thresh: float = 0.4) -> tuple[Tensor, Tensor]:
    """Mask IoU targets and sample weights (spec §2.7).

    Args:
        masks: (P, H, W) cropped soft masks; gt_masks: (P, H, W) uncropped 0/1 gt masks.
    Returns:
        iou (P,) and weight (P,) in {0, 1}.
    """
    binary = (masks > thresh).float()
    inter = (binary * gt_masks).sum(dim=(1, 2))
    area_p = binary.sum(dim=(1, 2))
    area_g = gt_masks.sum(dim=(1, 2))
    iou = inter / (area_p + area_g - inter + 0.1)
    weight = ((iou > 0.1) & (iou <= 1.0) & (area_g >= 100)).float()
    return iou, weight


def rescoring_loss(pred_iou: Tensor, target_iou: Tensor, weight: Tensor) -> Tensor:
    """``10 * sum(v * (s - IoU*)^2) / (0.1 + sum(v))`` over all images' kept positives."""
    return 10 * (weight * (pred_iou - target_iou) ** 2).sum() / (0.1 + weight.sum())
