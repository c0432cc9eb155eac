from .fcos import FCOS, fcos_detections_single_image
from .head import FCOSHead, Scale
from .locations import compute_locations, compute_locations_per_level
from .losses import iou_loss
from .targets import (
    FCOSTargets,
    centerness_targets,
    fcos_assign_targets,
    level_size_ranges,
    per_location_stride_and_range,
)

__all__ = [
    "FCOS",
    "FCOSHead",
    "FCOSTargets",
    "Scale",
    "centerness_targets",
    "compute_locations",
    "compute_locations_per_level",
    "fcos_assign_targets",
    "fcos_detections_single_image",
    "iou_loss",
    "level_size_ranges",
    "per_location_stride_and_range",
]
