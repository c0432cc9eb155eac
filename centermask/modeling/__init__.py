"""Importing this package registers CenterMask's meta-architecture and RoI heads with Detectron2 (its
backbones and the FCOS proposal generator are the shared core's, registered by ``import onestage``)."""

import onestage  # noqa: F401  (FCOS and the VoVNet / MobileNetV2 FPN backbones of the configs)

from . import roi_heads
from .meta_arch import CenterMask
from .roi_heads import CenterROIHeads, MaskIoUHead, SpatialAttentionMaskHead

__all__ = ["CenterMask", "CenterROIHeads", "MaskIoUHead", "SpatialAttentionMaskHead", "roi_heads"]
