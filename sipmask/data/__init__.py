"""SipMask's training mappers, registered by name for ``INPUT.DATASET_MAPPER_NAME``: the real-time
pipeline ``SSDDatasetMapper`` and SipMask-VIS's query / reference pairs ``SipMaskVISPairMapper``."""

from onestage.data import DATASET_MAPPER_REGISTRY

from .ssd_augmentation import SSDDatasetMapper, expand, min_iou_random_crop, photometric_distortion
from .vis_pairs import RangeResize, SipMaskVISPairMapper, sample_pair

DATASET_MAPPER_REGISTRY.register(SSDDatasetMapper)
DATASET_MAPPER_REGISTRY.register(SipMaskVISPairMapper)

__all__ = [
    "RangeResize",
    "SSDDatasetMapper",
    "SipMaskVISPairMapper",
    "expand",
    "min_iou_random_crop",
    "photometric_distortion",
    "sample_pair",
]
