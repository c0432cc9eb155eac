"""Importing this package registers the ``SipMask`` meta-architecture and its FPN backbone."""

from .backbone import SipMaskFPN, build_sipmask_resnet_fpn_backbone
from .crop_split import crop_split, crop_split_gt
from .head import SipMaskHead
from .meta_arch import SipMask
from .tracking import EmbeddingTracker, SipMaskTrackHead
from .vis_meta_arch import SipMaskVIS

__all__ = [
    "SipMask",
    "SipMaskFPN",
    "SipMaskHead",
    "SipMaskTrackHead",
    "SipMaskVIS",
    "EmbeddingTracker",
    "build_sipmask_resnet_fpn_backbone",
    "crop_split",
    "crop_split_gt",
]
