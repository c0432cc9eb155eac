"""SipMask's real-time training pipeline, registered as ``INPUT.DATASET_MAPPER_NAME: SSDDatasetMapper``."""

from onestage.data import DATASET_MAPPER_REGISTRY

from .ssd_augmentation import SSDDatasetMapper, expand, min_iou_random_crop, photometric_distortion

DATASET_MAPPER_REGISTRY.register(SSDDatasetMapper)

__all__ = ["SSDDatasetMapper", "expand", "min_iou_random_crop", "photometric_distortion"]
