"""SipMask-VIS training pairs (spec sipmask_vis.md §4.1-4.2, §4.5): ``INPUT.DATASET_MAPPER_NAME:
SipMaskVISPairMapper`` on a video dataset.

A pair is ``[query, reference]``: the query frame uniform among the frames with a non-crowd object,
the reference uniform among the *other* such frames of the video (any temporal distance). Both get
the same resize and flip (the clip mapper's shared augmentation) and ``gt_ids``; the model derives
``gt_pids`` from them (:func:`vis_eval.data.video_mapper.reference_positions`).

Sampling is per video (the project's video loader: one video per item), then per frame inside it;
the authors index every usable (video, frame) pair, which weights long videos more.

A video with a single usable frame (the authors' loader asserts) is paired with itself: the query
frame is its own reference, with a warning. A video without any usable frame gives a query without
ground truth (the image losses handle it; ``loss_match`` is 0 for it).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from vis_eval.data.video_mapper import VideoClipMapper, usable_frames

__all__ = ["RangeResize", "SipMaskVISPairMapper", "sample_pair"]

logger = logging.getLogger(__name__)


class RangeResize(T.Augmentation):
    """mmdet's "range" multi-scale resize: long- and short-edge limits drawn independently and
    uniformly from the integer ranges, then ``s = min(long / long_side, short / short_side)`` and
    the new size ``int(dim * s + 0.5)`` (bilinear)."""

    def __init__(self, long_range: tuple[int, int], short_range: tuple[int, int]):
        super().__init__()
        if long_range[0] > long_range[1] or short_range[0] > short_range[1] or min(short_range) < 1:
            raise ValueError(f"bad scale ranges: long {long_range}, short {short_range}")
        self.long_range = tuple(int(v) for v in long_range)
        self.short_range = tuple(int(v) for v in short_range)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        long_limit = np.random.randint(self.long_range[0], self.long_range[1] + 1)
        short_limit = np.random.randint(self.short_range[0], self.short_range[1] + 1)
        s = min(long_limit / max(h, w), short_limit / min(h, w))
        return T.ResizeTransform(h, w, int(h * s + 0.5), int(w * s + 0.5))


def sample_pair(rng: Any, video: dict) -> tuple[list[int], bool]:
    """``([query, reference], paired_with_itself)`` frame indices of one video (see the module doc)."""
    usable = usable_frames(video)
    if not usable:
        query = int(rng.randint(len(video["file_names"])))
        return [query, query], True
    query = int(rng.choice(usable))
    others = [t for t in usable if t != query]
    if not others:
        return [query, query], True
    return [query, int(rng.choice(others))], False


class SipMaskVISPairMapper(VideoClipMapper):
    """Video dict -> ``{"image": [query, reference], "instances": [...], ...}`` (the clip mapper's
    output with 2 frames in that order)."""

    @configurable
    def __init__(self, is_train: bool = True, **kwargs):
        kwargs["sampling_frame_num"] = 2
        super().__init__(is_train, **kwargs)

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        long_range = list(cfg.INPUT.get("MAX_SIZE_TRAIN_RANGE", []))
        if is_train and long_range:
            if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING != "range" or len(cfg.INPUT.MIN_SIZE_TRAIN) != 2:
                raise ValueError(
                    "INPUT.MAX_SIZE_TRAIN_RANGE needs INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' and a "
                    f"(min, max) INPUT.MIN_SIZE_TRAIN, got {cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING!r}, "
                    f"{tuple(cfg.INPUT.MIN_SIZE_TRAIN)}"
                )
            if len(long_range) != 2:
                raise ValueError(f"INPUT.MAX_SIZE_TRAIN_RANGE must be (min, max), got {long_range}")
            resize = RangeResize(tuple(long_range), tuple(cfg.INPUT.MIN_SIZE_TRAIN))
            ret["augmentations"] = [
                resize if isinstance(a, T.ResizeShortestEdge) else a for a in ret["augmentations"]
            ]
        for key in ("sampling_frame_num", "sampling_frame_range", "sampling_frame_shuffle"):
            ret.pop(key, None)
        return ret

    def _select_frames(self, video: dict) -> list[int]:
        if not self.is_train:
            return [0, min(1, len(video["file_names"]) - 1)]
        frames, alone = sample_pair(np.random, video)
        if alone:
            logger.warning(
                f"video {video.get('video_id')} has fewer than 2 frames with objects: its query frame "
                "is its own reference"
            )
        return frames
