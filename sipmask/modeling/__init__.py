from .backbone import (
    DeformBottleneckBlock,
    build_sipmask_resnet_backbone,
    build_sipmask_resnet_fpn_backbone,
)
from .crop_split import crop_split, crop_split_gt, crop_split_probs
from .head import SipMaskHead
from .meta_arch import SipMask

__all__ = [
    "DeformBottleneckBlock",
    "SipMask",
    "SipMaskHead",
    "build_sipmask_resnet_backbone",
    "build_sipmask_resnet_fpn_backbone",
    "crop_split",
    "crop_split_gt",
    "crop_split_probs",
]
