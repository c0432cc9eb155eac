"""A learnable scalar multiplier, one per FPN level in the dense heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Scale"]


class Scale(nn.Module):
    """``x * scale`` with a learnable ``scale`` of shape ``shape``: ``(1,)`` in centermask2 / AdelaiDet
    checkpoints, ``()`` (0-d) in mmdet ones, so either layout loads without reshaping."""

    def __init__(self, init_value: float = 1.0, shape: tuple[int, ...] = ()):
        super().__init__()
        self.scale = nn.Parameter(torch.full(shape, float(init_value), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale
