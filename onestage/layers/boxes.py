"""Box helpers: the inclusive "+1" pixel convention of the mmdet / maskrcnn-benchmark authors, and
distance decoding of dense detectors."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["distance_to_boxes", "plus_one_boxes"]


def plus_one_boxes(boxes: Tensor, plus_one: bool = True) -> Tensor:
    """Inclusive ``(x1, y1, x2, y2)`` -> continuous ``(x1, y1, x2 + 1, y2 + 1)`` when ``plus_one``:
    the continuous IoU / area of the result is the "+1" IoU / area of ``boxes``. (N, 4) -> (N, 4)."""
    if not plus_one:
        return boxes
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def distance_to_boxes(locations: Tensor, distances: Tensor) -> Tensor:
    """(L, 2) ``(x, y)`` and (L, 4) ``(l, t, r, b)`` -> (L, 4) ``(x - l, y - t, x + r, y + b)``."""
    return torch.cat([locations - distances[:, :2], locations + distances[:, 2:]], dim=1)
