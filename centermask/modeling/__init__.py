"""Importing this package registers CenterMask's backbones, FCOS and RoI heads with Detectron2."""

from . import backbone, fcos, roi_heads
from .fcos import FCOS, FCOSHead
from .roi_heads import CenterROIHeads, MaskIoUHead, SpatialAttentionMaskHead

__all__ = [
    "FCOS",
    "CenterROIHeads",
    "FCOSHead",
    "MaskIoUHead",
    "SpatialAttentionMaskHead",
    "backbone",
    "fcos",
    "roi_heads",
]
