"""STMask training clips (spec stmask.md §3.1): ``INPUT.DATASET_MAPPER_NAME: STMaskClipMapper`` on a
video dataset.

A clip is ``[earlier, later]``, two annotated frames of one video:

* the key frame is uniform among the video's usable frames (at least one valid non-crowd object);
* the other frame is uniform among the usable frames at offsets -2, -1, +1, +2 in the video's
  annotated-frame list (the JSON frame list: every 5th raw frame on YouTube-VIS); if there is none,
  the key frame is used twice (for a video with a single usable frame, with a warning once per video
  id and data-loader worker);
* the two indices are sorted, so the earlier frame comes first (``frame_indices``).

Both frames get the same augmentation: an exact resize to ``MODEL.STMASK.FIXED_INPUT_SIZE_TRAIN``
(H, W), ignoring the aspect ratio (images OpenCV bilinear, masks OpenCV nearest, as mmcv's
``imresize``), then a horizontal flip with probability 0.5 (``INPUT.RANDOM_FLIP``). There is no
photometric change, crop or padding: the model normalises and pads to a multiple of 32 itself.

Deviations from the authors, on purpose:

* Sampling is per video (the project's video loader gives one video per item), then per frame inside
  it; the authors index every usable (video, frame) pair, which weights long videos more.
* Boxes use Detectron2's continuous convention: ``x2 = x + w`` and a flip maps ``x -> W - x``. The
  authors use mmdet's legacy "-1" convention (``x2 = x + w - 1``; a flip maps ``x1' = W - x2 - 1``,
  ``x2' = W - x1 - 1``), i.e. boxes one pixel narrower and taller boxes one pixel shorter.
* A video without any usable frame (never an item of the authors' dataset) is skipped: the mapper
  returns ``None`` and Detectron2's ``MapDataset`` draws another video instead (with a warning, once
  per video id and worker).

Like the authors' parser, an object is dropped from a frame when it is a crowd or its box (in the
original frame) is narrower or shorter than 1 pixel; ``gt_ids`` are the track ids of the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, Instances

from vis_eval.data.video_mapper import VideoClipMapper, usable_frames

__all__ = [
    "REFERENCE_OFFSETS",
    "CV2ResizeTransform",
    "FixedSizeResize",
    "STMaskClipMapper",
    "sample_stmask_clip",
    "stmask_usable_frames",
    "valid_object",
]

logger = logging.getLogger(__name__)

# offsets (in annotated frames) of the candidate reference frames around the key frame
REFERENCE_OFFSETS = (-2, -1, 1, 2)


class CV2ResizeTransform(T.Transform):
    """Resize ``(h, w) -> (new_h, new_w)`` with OpenCV: images ``cv2.INTER_LINEAR`` (mmcv
    ``imresize``; Detectron2's ``ResizeTransform`` uses PIL, which antialiases when shrinking),
    segmentation masks ``cv2.INTER_NEAREST``, coordinates scaled continuously."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes(locals())

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"expected an image of {self.h}x{self.w} (HxW), got {img.shape[:2]}")
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel
            out = out[:, :, None]
        return out

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._resize(img, cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        dtype = segmentation.dtype
        if dtype.kind == "b":
            return self._resize(segmentation.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        return self._resize(segmentation, cv2.INTER_NEAREST).astype(dtype, copy=False)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """(N, 2) x, y -> a new float array (integer input is not truncated)."""
        coords = np.array(coords, dtype=np.float64 if coords.dtype.kind != "f" else coords.dtype)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def inverse(self) -> CV2ResizeTransform:
        return CV2ResizeTransform(self.new_h, self.new_w, self.h, self.w)


class FixedSizeResize(T.Augmentation):
    """Resize every image to exactly ``(height, width)``, ignoring the aspect ratio
    (:class:`CV2ResizeTransform`)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        height, width = (int(s) for s in size)
        if height < 1 or width < 1:
            raise ValueError(f"resize target must be a positive (H, W), got {tuple(size)}")
        self.size = (height, width)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        return CV2ResizeTransform(h, w, *self.size)


def valid_object(obj: dict) -> bool:
    """A non-crowd object whose box (original frame) is at least 1 x 1 pixel (the authors' parser)."""
    if obj.get("iscrowd", 0) or obj.get("bbox") is None:
        return False
    _, _, w, h = BoxMode.convert(list(obj["bbox"]), obj.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYWH_ABS)
    return w >= 1 and h >= 1


def stmask_usable_frames(video: dict) -> list[int]:
    """Indices of the frames of a video dict with at least one :func:`valid_object`."""
    return usable_frames(video, valid_object)


def sample_stmask_clip(rng: Any, usable: list[int]) -> list[int] | None:
    """``[earlier, later]`` frame indices of a clip (§3.1, see the module doc) given the usable frame
    indices of a video; ``[key, key]`` when the key frame has no usable neighbour at offsets
    :data:`REFERENCE_OFFSETS`; ``None`` when ``usable`` is empty. ``rng``: ``np.random.RandomState``,
    ``Generator`` or the ``np.random`` module."""
    if not usable:
        return None
    key = int(rng.choice(usable))
    pool = set(usable)
    neighbours = [key + d for d in REFERENCE_OFFSETS if key + d in pool]
    if not neighbours:
        return [key, key]
    other = int(rng.choice(neighbours))
    return sorted([key, other])


class STMaskClipMapper(VideoClipMapper):
    """Video dict -> ``{"image": [earlier, later], "instances": [...], "frame_indices", ...}``: the
    clip mapper's output (CHW uint8 images in ``INPUT.FORMAT``, ``Instances`` with ``gt_boxes`` in
    pixels of the resized frame, ``gt_classes`` 0-based, ``gt_masks`` ``BitMasks`` or polygons,
    ``gt_ids``) for the 2-frame clips of §3.1, or ``None`` for a video without a usable frame.

    Not training (``is_train=False``): the first two frames, resized, not flipped.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list[T.Augmentation | T.Transform],
        image_format: str,
        mask_format: str = "bitmask",
    ):
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            sampling_frame_num=2,
            mask_format=mask_format,
            recompute_boxes=False,
        )
        self._warned: set = set()

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict[str, Any]:
        if cfg.INPUT.CROP.ENABLED:
            raise ValueError("STMaskClipMapper does not crop (spec §3.1): set INPUT.CROP.ENABLED False")
        size = cfg.MODEL.STMASK.FIXED_INPUT_SIZE_TRAIN
        if len(size) != 2:
            raise ValueError(f"MODEL.STMASK.FIXED_INPUT_SIZE_TRAIN must be (H, W), got {tuple(size)}")
        augs: list[T.Augmentation] = [FixedSizeResize(tuple(size))]
        flip = cfg.INPUT.RANDOM_FLIP
        if is_train and flip != "none":
            if flip not in ("horizontal", "vertical"):
                raise ValueError(f"INPUT.RANDOM_FLIP must be horizontal, vertical or none, got {flip!r}")
            augs.append(T.RandomFlip(0.5, horizontal=flip == "horizontal", vertical=flip == "vertical"))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "mask_format": cfg.INPUT.MASK_FORMAT,
        }

    def _warn_once(self, video: dict, kind: str, message: str) -> None:
        vid = video.get("video_id")
        if (vid, kind) not in self._warned:
            self._warned.add((vid, kind))
            logger.warning(f"video {vid}: {message}")

    def __call__(self, video: dict, frames: list[int] | None = None) -> dict | None:
        if self.is_train and frames is None:
            usable = stmask_usable_frames(video)
            frames = sample_stmask_clip(np.random, usable)  # Detectron2 seeds np.random per worker
            if frames is None:
                self._warn_once(video, "empty", "no frame with a (non-crowd, >= 1 x 1 px) object: skipped")
                return None
            if len(usable) == 1:
                self._warn_once(
                    video, "single", "a single frame with objects: its clips repeat that frame twice"
                )
        return super().__call__(video, frames)

    def _frame_instances(
        self, objects: list[dict], transforms: T.TransformList, image_shape: tuple
    ) -> Instances:
        return super()._frame_instances([o for o in objects if valid_object(o)], transforms, image_shape)
