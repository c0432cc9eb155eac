"""STMask's training mapper, registered by name for ``INPUT.DATASET_MAPPER_NAME``: the 2-frame clips
``STMaskClipMapper`` (spec stmask.md §3.1)."""

from onestage.data import DATASET_MAPPER_REGISTRY

from .clip_mapper import (
    REFERENCE_OFFSETS,
    CV2ResizeTransform,
    FixedSizeResize,
    STMaskClipMapper,
    sample_stmask_clip,
    stmask_usable_frames,
    valid_object,
)

DATASET_MAPPER_REGISTRY.register(STMaskClipMapper)

__all__ = [
    "REFERENCE_OFFSETS",
    "CV2ResizeTransform",
    "FixedSizeResize",
    "STMaskClipMapper",
    "sample_stmask_clip",
    "stmask_usable_frames",
    "valid_object",
]
