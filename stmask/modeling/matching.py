"""STMask's per-frame target assignment (spec stmask.md §3.3): SSD-style IoU matching against the
anchors with multi-instance demotion, class-aware thresholds from the current logits and forced
matches for every GT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_ops import VARIANCES, box_iou, encode, point_form

__all__ = ["match"]


def match(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_ids: Tensor,
    priors: Tensor,
    conf_logits: Tensor,
    pos_thresh: float = 0.5,
    neg_thresh: float = 0.4,
    variances: Sequence[float] = VARIANCES,
) -> dict[str, Tensor]:
    """Assign the N anchors of one frame to its m GT instances.

    Args:
        gt_boxes: (m, 4) normalised ``(x1, y1, x2, y2)``.
        gt_labels: (m,) 1-based class labels (index into ``conf_logits``' last dim).
        gt_ids: (m,) instance ids (> 0).
        priors: (N, 4) centre-size anchors.
        conf_logits: (N, C) predicted class logits of this frame; used (without gradient) for the
            class-aware thresholds.
        pos_thresh, neg_thresh: the base IoU thresholds (0.5 / 0.4).

    Returns:
        dict with ``conf_t`` (N,) long (-1 neutral, 0 background, > 0 label), ``loc_t`` (N, 4)
        encoded boxes, ``gt_box_t`` (N, 4) matched GT boxes, ``ids_t`` (N,) long (0 unless positive)
        and ``idx_t`` (N,) long matched GT index. With m = 0 every anchor is background (zeros).
    """
    num_anchors = priors.shape[0]
    device = priors.device
    m = gt_boxes.shape[0]
    if m == 0:
        zeros = torch.zeros(num_anchors, dtype=torch.long, device=device)
        boxes = priors.new_zeros(num_anchors, 4)
        return {
            "conf_t": zeros,
            "loc_t": boxes,
            "gt_box_t": boxes.clone(),
            "ids_t": zeros.clone(),
            "idx_t": zeros.clone(),
        }

    overlaps = box_iou(gt_boxes, point_form(priors))  # (m, N)
    best_ov, best_gt = overlaps.max(dim=0)

    # anchors overlapping two or more GTs with IoU > pos - 0.1 sit between the thresholds
    multi = (overlaps > pos_thresh - 0.1).sum(dim=0) > 1
    best_ov = torch.where(multi, best_ov.new_tensor((pos_thresh + neg_thresh) / 2), best_ov)

    # class-aware shift: q = 2 p / (1 + p) = 2 / (1 + exp(CE)) = 2 sigmoid(log p) for the anchors
    # above pos_thresh; both thresholds move by the mean q over those anchors (0 if there are none)
    keep = best_ov > pos_thresh
    log_p = F.log_softmax(conf_logits.detach().float(), dim=-1)
    log_p = log_p.gather(1, gt_labels[best_gt].long()[:, None]).squeeze(1)
    q = 2.0 * torch.sigmoid(log_p).to(best_ov.dtype)
    keep_f = keep.to(best_ov.dtype)
    best_ov = best_ov + q * keep_f
    shift = (q * keep_f).sum() / keep_f.sum().clamp(min=1.0)

    # forced matches: m times, the globally best remaining (GT, anchor) pair of the raw IoUs
    remaining = overlaps.clone()
    forced_ov = best_ov.new_tensor([2.0])
    for _ in range(m):
        row_max, row_arg = remaining.max(dim=1)  # best anchor of every GT
        j = row_max.argmax(dim=0, keepdim=True)  # (1,) the GT with the highest overlap
        i = row_arg[j]  # (1,) its anchor
        remaining.index_fill_(1, i, -1.0)
        remaining.index_fill_(0, j, -1.0)
        best_ov = best_ov.index_put((i,), forced_ov)
        best_gt = best_gt.index_put((i,), j)

    pos_t = pos_thresh + shift
    neg_t = neg_thresh + shift
    labels = gt_labels.long()[best_gt]
    labels = torch.where(best_ov < pos_t, torch.full_like(labels, -1), labels)
    labels = torch.where(best_ov < neg_t, torch.zeros_like(labels), labels)
    ids = gt_ids.long()[best_gt]
    ids = torch.where(best_ov < pos_t, torch.zeros_like(ids), ids)
    matched = gt_boxes[best_gt]
    return {
        "conf_t": labels,
        "loc_t": encode(matched, priors, variances),
        "gt_box_t": matched,
        "ids_t": ids,
        "idx_t": best_gt,
    }
