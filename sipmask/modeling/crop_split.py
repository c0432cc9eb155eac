"""Spatial-preservation assembly (``crop_split``) with the authors' CUDA semantics (spec §1.7).

Boxes are in mask-grid pixels and are *not* clamped. Pixel ``(y, x)`` (integer indices, no half-pixel
offset) is inside iff ``x1 <= x < x2`` and ``y1 <= y < y2``; it belongs to quadrant
``(qy, qx) = (trunc((y - y1) / ch), trunc((x - x1) / cw))`` with ``cw = (x2 - x1 + 0.1) / 2``,
``ch = (y2 - y1 + 0.1) / 2``. Quadrant order TL, TR, BL, BR, i.e. coefficient slices ``[0:K]``,
``[K:2K]``, ``[2K:3K]``, ``[3K:4K]`` for ``K`` basis masks.

Everything is vectorised over instances; the only loop is over the 4 quadrants.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_quadrants", "crop_split", "crop_split_gt"]


def box_quadrants(boxes: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-instance row / column membership of the box and of its lower / right half.

    Args:
        boxes: (N, 4) float ``(x1, y1, x2, y2)`` in mask-grid pixels.
    Returns:
        inside_y (N, H), bottom (N, H), inside_x (N, W), right (N, W), all bool.
    """
    boxes = boxes.float()
    x1, y1, x2, y2 = (b[:, None] for b in boxes.unbind(dim=1))
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32)[None, :]
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32)[None, :]
    inside_x = (xs >= x1) & (xs < x2)
    inside_y = (ys >= y1) & (ys < y2)
    cw = (x2 - x1 + 0.1) / 2
    ch = (y2 - y1 + 0.1) / 2
    right = torch.trunc((xs - x1) / cw) >= 1
    bottom = torch.trunc((ys - y1) / ch) >= 1
    return inside_y, bottom, inside_x, right


def _quadrant_selectors(boxes: Tensor, height: int, width: int) -> list[Tensor]:
    """Four (N, H, W) bool masks, one per quadrant TL, TR, BL, BR; zero outside the box."""
    inside_y, bottom, inside_x, right = box_quadrants(boxes, height, width)
    rows = [inside_y & ~bottom, inside_y & bottom]
    cols = [inside_x & ~right, inside_x & right]
    return [rows[q // 2][:, :, None] & cols[q % 2][:, None, :] for q in range(4)]


def crop_split(basis: Tensor, coeffs: Tensor, boxes: Tensor) -> Tensor:
    """Soft instance masks from basis masks and 2x2 sub-region coefficients.

    Args:
        basis: (K, H, W) basis masks of one image.
        coeffs: (N, 4K) coefficients, quadrant-major (TL, TR, BL, BR).
        boxes: (N, 4) mask-grid boxes ``(x1, y1, x2, y2)``, not clamped.
    Returns:
        (N, H, W) probabilities ``sigmoid(basis . c_q)`` of each pixel's quadrant, 0 outside the box.
    """
    k, h, w = basis.shape
    n = coeffs.shape[0]
    if coeffs.shape[1] != 4 * k:
        raise ValueError(f"coeffs must have 4 x {k} channels, got {coeffs.shape[1]}")
    out = basis.new_zeros((n, h, w))
    if n == 0:
        return out
    flat = basis.reshape(k, h * w)
    for q, sel in enumerate(_quadrant_selectors(boxes, h, w)):
        prob = torch.sigmoid(coeffs[:, q * k : (q + 1) * k] @ flat).view(n, h, w)
        out = torch.where(sel, prob, out)
    return out


def crop_split_gt(masks: Tensor, boxes: Tensor) -> Tensor:
    """Zero (N, H, W) target masks outside the half-open boxes ``[x1, x2) x [y1, y2)``."""
    n, h, w = masks.shape
    inside_y, _, inside_x, _ = box_quadrants(boxes, h, w)
    return masks * (inside_y[:, :, None] & inside_x[:, None, :]).to(masks.dtype)
