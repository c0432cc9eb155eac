"""STMask's anchors, SSD box coding and mask helpers (spec stmask.md §2.6, §3.5.2, §4.4).

Boxes are ``(x1, y1, x2, y2)`` normalised by the padded input size; priors are centre-size
``(cx, cy, w, h)`` in the same units. Masks are assembled at prototype resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.structures import Boxes, pairwise_iou
from torch import Tensor

from onestage.layers import boxes_as_distances, iou_loss

__all__ = [
    "assemble_masks",
    "box_iou",
    "center_size",
    "crop_masks",
    "decode",
    "diou",
    "encode",
    "make_priors",
    "point_form",
]

VARIANCES = (0.1, 0.2)


def make_priors(
    feature_sizes: Sequence[tuple[int, int]],
    anchor_shapes: Sequence[Sequence[int]] = ((3, 3), (3, 5), (5, 3)),
    device: torch.device | str | None = None,
) -> Tensor:
    """Anchors of every level, (N, 4) centre-size, in the head's order: levels in order, locations
    row-major (y then x), the anchor shapes innermost. ``anchor_shapes``: (h, w) in feature cells.

    At location (i, j) of an (Hf, Wf) map: ``cx = (j + 0.5) / Wf``, ``cy = (i + 0.5) / Hf``,
    ``w = aw / Wf``, ``h = ah / Hf``.
    """
    shapes = torch.tensor(anchor_shapes, dtype=torch.float32, device=device)  # (K, 2) as (h, w)
    priors = []
    for hf, wf in feature_sizes:
        ys = (torch.arange(hf, dtype=torch.float32, device=device) + 0.5) / hf
        xs = (torch.arange(wf, dtype=torch.float32, device=device) + 0.5) / wf
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (Hf, Wf)
        k = shapes.shape[0]
        level = torch.stack(
            [
                cx[:, :, None].expand(hf, wf, k),
                cy[:, :, None].expand(hf, wf, k),
                (shapes[:, 1] / wf).expand(hf, wf, k),
                (shapes[:, 0] / hf).expand(hf, wf, k),
            ],
            dim=-1,
        )
        priors.append(level.reshape(-1, 4))
    return torch.cat(priors) if priors else torch.zeros(0, 4, device=device)


def point_form(boxes: Tensor) -> Tensor:
    """(..., 4) centre-size -> (x1, y1, x2, y2)."""
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1)


def center_size(boxes: Tensor) -> Tensor:
    """(..., 4) (x1, y1, x2, y2) -> centre-size."""
    return torch.cat([(boxes[..., 2:] + boxes[..., :2]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)


def encode(matched: Tensor, priors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """SSD encoding of (..., 4) ``(x1, y1, x2, y2)`` boxes against (..., 4) centre-size priors."""
    g_cxcy = ((matched[..., :2] + matched[..., 2:]) / 2 - priors[..., :2]) / (variances[0] * priors[..., 2:])
    g_wh = torch.log((matched[..., 2:] - matched[..., :2]) / priors[..., 2:]) / variances[1]
    return torch.cat([g_cxcy, g_wh], dim=-1)


def decode(loc: Tensor, priors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Inverse of :func:`encode`: (..., 4) regression + centre-size priors -> ``(x1, y1, x2, y2)``,
    not clamped."""
    centres = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    sizes = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(A, 4) x (B, 4) ``(x1, y1, x2, y2)`` -> (A, B) IoU (Detectron2's ``pairwise_iou``)."""
    return pairwise_iou(Boxes(a), Boxes(b))


def diou(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise DIoU of (P, 4) ``(x1, y1, x2, y2)`` pairs: ``IoU - d^2 / c^2`` with the squared
    enclosing diagonal ``c^2`` clamped to >= 1e-10 (the authors' box loss and centerness target)."""
    loss = iou_loss(boxes_as_distances(pred), boxes_as_distances(target), "diou", enclose_min=1e-10)
    return 1.0 - loss


def crop_masks(masks: Tensor, boxes: Tensor, padding: int = 1) -> Tensor:
    """Zero (n, H, W) masks outside their (n, 4) normalised boxes: in pixels ``x1 = max(min(x1, x2)
    * W - padding, 0)``, ``x2 = min(max(x1, x2) * W + padding, W)`` (not rounded); column ``j`` is kept
    iff ``x1 <= j < x2``, rows likewise (YOLACT's ``crop``)."""
    n, h, w = masks.shape
    x1, x2 = _sanitize(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = _sanitize(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, None, :]
    rows = torch.arange(h, device=masks.device, dtype=y1.dtype)[None, :, None]
    keep_x = (cols >= x1[:, None, None]) & (cols < x2[:, None, None])
    keep_y = (rows >= y1[:, None, None]) & (rows < y2[:, None, None])
    return masks * (keep_x & keep_y).to(masks.dtype)


def _sanitize(a: Tensor, b: Tensor, size: int, padding: int) -> tuple[Tensor, Tensor]:
    a, b = a * size, b * size
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    return (lo - padding).clamp(min=0), (hi + padding).clamp(max=size)


def assemble_masks(proto: Tensor, coeffs: Tensor) -> Tensor:
    """Soft masks ``sigmoid(proto @ tanh(coeffs)^T)``: (H, W, M) prototypes and (n, M) pre-tanh
    coefficients -> (n, H, W), not cropped."""
    return torch.sigmoid(proto @ torch.tanh(coeffs).t()).permute(2, 0, 1)
