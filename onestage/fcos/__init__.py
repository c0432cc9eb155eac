"""FCOS pieces shared by the dense methods: locations, target assignment, the post-processing decoder,
and the FCOS head / proposal generator (``PROPOSAL_GENERATOR_REGISTRY`` name ``FCOS``)."""

from .decode import select_fcos_detections
from .fcos import FCOS, fcos_detections_single_image
from .head import FCOSHead
from .locations import compute_locations, compute_locations_per_level
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
    "centerness_targets",
    "compute_locations",
    "compute_locations_per_level",
    "fcos_assign_targets",
    "fcos_detections_single_image",
    "level_size_ranges",
    "per_location_stride_and_range",
    "select_fcos_detections",
]
