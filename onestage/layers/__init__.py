"""Layers shared by the methods: deformable convolution, ``Scale``, IoU-family losses, NMS, box and
distributed helpers."""

from .boxes import distance_to_boxes, plus_one_boxes
from .comm import reduce_mean
from .deform_conv import DeformConv, ModulatedDeformConv, offset_conv
from .iou_loss import boxes_as_distances, iou_loss
from .nms import fast_nms, multiclass_nms, pairwise_iou_batched
from .scale import Scale

__all__ = [
    "DeformConv",
    "ModulatedDeformConv",
    "Scale",
    "boxes_as_distances",
    "distance_to_boxes",
    "fast_nms",
    "iou_loss",
    "multiclass_nms",
    "offset_conv",
    "pairwise_iou_batched",
    "plus_one_boxes",
    "reduce_mean",
]
