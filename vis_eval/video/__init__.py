"""Streaming video inference: frame sources, the runner, per-video results, trackers.

Importing this package registers :class:`MaskIoUTracker` in Detectron2's ``TRACKER_HEADS_REGISTRY``.
The video-model contract is in :mod:`vis_eval.video.runner`.
"""

from .frames import IMAGE_EXTENSIONS, iter_frames
from .result_builder import VideoResultBuilder
from .runner import TrackedFrame, VideoRunner, annotate_frame, video_model
from .tracker import MaskIoUTracker, binary_masks, mask_iou

__all__ = [
    "IMAGE_EXTENSIONS",
    "MaskIoUTracker",
    "TrackedFrame",
    "VideoResultBuilder",
    "VideoRunner",
    "annotate_frame",
    "binary_masks",
    "iter_frames",
    "mask_iou",
    "video_model",
]
