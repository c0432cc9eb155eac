"""Location grid of the FCOS feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["compute_locations", "compute_locations_per_level"]


def compute_locations_per_level(
    height: int, width: int, stride: int, device: torch.device | str = "cpu"
) -> Tensor:
    """(H*W, 2) float32 ``(x, y)`` of a level's cells, row-major (y outer, x inner).

    Cell ``(i, j)`` maps to ``(j * stride + stride // 2, i * stride + stride // 2)``.
    """
    shifts_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack([shift_x.reshape(-1), shift_y.reshape(-1)], dim=1) + stride // 2


def compute_locations(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | str = "cpu"
) -> list[Tensor]:
    """Locations of every level: one (H_l*W_l, 2) tensor per ``(H_l, W_l)`` in ``shapes``."""
    return [compute_locations_per_level(h, w, s, device) for (h, w), s in zip(shapes, strides, strict=True)]
