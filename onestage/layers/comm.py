"""Distributed helpers for loss normalisation."""

from __future__ import annotations

import torch.distributed as dist
from detectron2.utils import comm
from torch import Tensor

__all__ = ["reduce_mean"]


def reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over all processes (``x`` itself in a single process). Every process must call
    it, whatever its data, or the all-reduce hangs."""
    world_size = comm.get_world_size()
    if world_size > 1:
        x = x.clone()
        dist.all_reduce(x)
        x = x / world_size
    return x
