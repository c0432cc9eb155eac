from .ssd_augmentation import SSDDatasetMapper, expand, min_iou_random_crop, photometric_distortion

__all__ = [
    "SSDDatasetMapper",
    "build_sipmask_train_mapper",
    "expand",
    "min_iou_random_crop",
    "photometric_distortion",
]


def build_sipmask_train_mapper(cfg):
    """The training mapper a SipMask config asks for: :class:`SSDDatasetMapper` when
    ``INPUT.SSD_AUGMENTATION`` is set (the real-time configs), else None (Detectron2's default)."""
    if cfg.INPUT.get("SSD_AUGMENTATION", False):
        return SSDDatasetMapper(cfg)
    return None
