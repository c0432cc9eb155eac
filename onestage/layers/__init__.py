"""Layers shared by the methods: deformable convolution, ``Scale``, IoU-family losses, NMS, batched mask
pasting, box and distributed helpers."""

from .boxes import distance_to_boxes, plus_one_boxes
from .comm import reduce_mean
from .deform_conv import DeformConv, ModulatedDeformConv, deform_conv2d_sampled, offset_conv
from .iou_loss import boxes_as_distances, iou_loss
from .mask_ops import (
    BatchPastedROIMasks,
    bilinear_source_index,
    paste_masks_in_image,
    paste_windows,
    upsample_windows_into,
    window_chunks,
)
from .nms import fast_nms, multiclass_nms, pairwise_iou_batched, top_batched_nms
from .scale import Scale

__all__ = [
    "BatchPastedROIMasks",
    "DeformConv",
    "ModulatedDeformConv",
    "Scale",
    "bilinear_source_index",
    "boxes_as_distances",
    "deform_conv2d_sampled",
    "distance_to_boxes",
    "fast_nms",
    "iou_loss",
    "multiclass_nms",
    "offset_conv",
    "pairwise_iou_batched",
    "paste_masks_in_image",
    "paste_windows",
    "plus_one_boxes",
    "reduce_mean",
    "top_batched_nms",
    "upsample_windows_into",
    "window_chunks",
]
