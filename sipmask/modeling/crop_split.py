"""Spatial-preservation assembly (``crop_split``) with the authors' CUDA semantics (spec §1.7).

Boxes are in mask-grid pixels and are *not* clamped. Pixel ``(y, x)`` (integer indices, no half-pixel
offset) is inside iff ``x1 <= x < x2`` and ``y1 <= y < y2``; it belongs to quadrant
``(qy, qx) = (trunc((y - y1) / ch), trunc((x - x1) / cw))`` with ``cw = (x2 - x1 + 0.1) / 2``,
``ch = (y2 - y1 + 0.1) / 2``. Quadrant order TL, TR, BL, BR, i.e. coefficient slices ``[0:K]``,
``[K:2K]``, ``[2K:3K]``, ``[3K:4K]`` for ``K`` basis masks.

Everything is vectorised over instances; the only loop is over the 4 quadrants.
:func:`crop_split_windows` computes the same masks on each box's pixels only (inference).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_pixel_windows", "box_quadrants", "crop_split", "crop_split_gt", "crop_split_windows"]


def box_quadrants(
    boxes: Tensor, height: int, width: int, ys: Tensor | None = None, xs: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-instance row / column membership of the box and of its lower / right half.

    Args:
        boxes: (N, 4) float ``(x1, y1, x2, y2)`` in mask-grid pixels.
        ys, xs: optional (N, L) float32 pixel indices to evaluate instead of ``0 .. height - 1`` /
            ``0 .. width - 1``.
    Returns:
        inside_y (N, H), bottom (N, H), inside_x (N, W), right (N, W), all bool.
    """
    boxes = boxes.float()
    x1, y1, x2, y2 = (b[:, None] for b in boxes.unbind(dim=1))
    if xs is None:
        xs = torch.arange(width, device=boxes.device, dtype=torch.float32)[None, :]
    if ys is None:
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
    if n == 0:
        return basis.new_zeros((n, h, w))
    flat = basis.reshape(k, h * w)
    selectors = _quadrant_selectors(boxes, h, w)
    logits = (coeffs[:, :k] @ flat).view(n, h, w)
    for q in range(1, 4):  # each pixel takes the logit of its quadrant; one sigmoid in the end
        logits = torch.where(selectors[q], (coeffs[:, q * k : (q + 1) * k] @ flat).view(n, h, w), logits)
    inside = selectors[0] | selectors[1] | selectors[2] | selectors[3]
    return torch.where(inside, torch.sigmoid(logits), 0.0)


def box_pixel_windows(boxes: Tensor, height: int, width: int) -> Tensor:
    """(N, 4) int64 ``(x0, y0, x1, y1)``: the pixels ``[x0, x1) x [y0, y1)`` inside each box
    (``x1 <= x < x2``), clipped to the (height, width) grid (empty when ``x1 <= x0``)."""
    windows = boxes.float().ceil().long()
    limits = torch.tensor([width, height, width, height], device=boxes.device)
    return torch.minimum(windows.clamp(min=0), limits)


def crop_split_windows(basis: Tensor, coeffs: Tensor, boxes: Tensor, windows: Tensor) -> Tensor:
    """:func:`crop_split` on each box's pixels only.

    Args:
        basis: (K, H, W); coeffs: (N, 4K); boxes: (N, 4) mask-grid boxes.
        windows: (N, 4) their :func:`box_pixel_windows`.
    Returns:
        (N, hh, ww), hh / ww the largest window height / width: ``out[i, :y1 - y0, :x1 - x0]`` is
        ``crop_split(...)[i, y0:y1, x0:x1]`` (up to float rounding of the dot products), 0 beyond.
    """
    k, h, w = basis.shape
    n = coeffs.shape[0]
    sizes = windows[:, 2:] - windows[:, :2]
    hh = int(sizes[:, 1].max()) if n else 0
    ww = int(sizes[:, 0].max()) if n else 0
    if n == 0 or hh <= 0 or ww <= 0:
        return basis.new_zeros((n, max(hh, 0), max(ww, 0)))
    ys = windows[:, 1, None] + torch.arange(hh, device=basis.device)  # (N, hh) grid rows
    xs = windows[:, 0, None] + torch.arange(ww, device=basis.device)
    inside_y, bottom, inside_x, right = box_quadrants(boxes, h, w, ys.float(), xs.float())
    # (N, K, hh * ww) basis values on each window (clamped indices beyond the grid are masked below)
    values = basis[:, ys.clamp(max=h - 1)[:, :, None], xs.clamp(max=w - 1)[:, None, :]]
    values = values.permute(1, 0, 2, 3).reshape(n, k, hh * ww)
    logits = torch.bmm(coeffs.reshape(n, 4, k), values).view(n, 4, hh, ww)
    quadrant = 2 * bottom.long()[:, :, None] + right.long()[:, None, :]  # TL, TR, BL, BR
    logit = logits.gather(1, quadrant[:, None]).squeeze(1)
    # inside the box and within the window (a window clipped by the grid ends before the box)
    inside_y &= torch.arange(hh, device=basis.device) < sizes[:, 1, None]
    inside_x &= torch.arange(ww, device=basis.device) < sizes[:, 0, None]
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return torch.where(inside, torch.sigmoid(logit), 0.0)


def crop_split_gt(masks: Tensor, boxes: Tensor) -> Tensor:
    """Zero (N, H, W) target masks outside the half-open boxes ``[x1, x2) x [y1, y2)``."""
    n, h, w = masks.shape
    inside_y, _, inside_x, _ = box_quadrants(boxes, h, w)
    return masks * (inside_y[:, :, None] & inside_x[:, None, :]).to(masks.dtype)
