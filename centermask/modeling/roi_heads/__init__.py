from .center_heads import CenterROIHeads
from .mask_head import SpatialAttention, SpatialAttentionMaskHead, mask_inference, mask_loss
from .maskiou_head import (
    ROI_MASKIOU_HEAD_REGISTRY,
    MaskIoUHead,
    build_maskiou_head,
    gt_mask_fraction_in_boxes,
    maskiou_inference,
    maskiou_loss,
    maskiou_targets,
)
from .pooler import CenterROIPooler, assign_boxes_to_levels_by_ratio

__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "CenterROIHeads",
    "CenterROIPooler",
    "MaskIoUHead",
    "SpatialAttention",
    "SpatialAttentionMaskHead",
    "assign_boxes_to_levels_by_ratio",
    "build_maskiou_head",
    "gt_mask_fraction_in_boxes",
    "mask_inference",
    "mask_loss",
    "maskiou_inference",
    "maskiou_loss",
    "maskiou_targets",
]
