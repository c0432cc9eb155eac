"""Training clip mapper for YouTube-VIS-style video dicts (:func:`vis_eval.data.ytvis.load_ytvis_json`).

A clip is ``N = INPUT.SAMPLING_FRAME_NUM`` frames: a reference frame (uniform among the frames with at
least one non-crowd object) plus ``N - 1`` frames drawn from the ``INPUT.SAMPLING_FRAME_RANGE``
frames on either side of it (without replacement when there are enough, else with replacement),
sorted by time (optionally shuffled). The augmentation is sampled once, on the first frame, and the
resulting ``TransformList`` is applied to every frame of the clip and to its annotations, so all
frames share the same resize, flip, crop and colour change. Every frame gets an ``Instances`` with
``gt_boxes``, ``gt_classes``, ``gt_masks`` and ``gt_ids`` (track ids) of its visible non-crowd
objects; a track absent from a frame simply has no row there (associate rows across frames by
``gt_ids``, e.g. with :func:`reference_positions`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances, PolygonMasks

__all__ = ["VideoClipMapper", "reference_positions", "sample_clip_frames", "usable_frames"]

logger = logging.getLogger(__name__)


def sample_clip_frames(
    rng: Any,
    length: int,
    num_frames: int,
    frame_range: int,
    reference_candidates: list[int] | None = None,
    shuffle: bool = False,
) -> list[int]:
    """Frame indices of one clip (``num_frames`` entries, sorted unless ``shuffle``); ``rng`` is a
    ``np.random.Generator``, ``RandomState`` or the ``np.random`` module.

    The reference frame is uniform over ``reference_candidates`` (default: all frames); the others
    are drawn from ``[ref - frame_range, ref + frame_range]`` minus the reference, inside the video,
    without replacement if there are enough candidates, else with replacement (the reference itself
    is repeated for a one-frame video).
    """
    if length < 1:
        raise ValueError("cannot sample a clip from a video without frames")
    if num_frames < 1 or frame_range < 0:
        raise ValueError(f"need num_frames >= 1 and frame_range >= 0, got {num_frames}, {frame_range}")
    pool = list(range(length)) if not reference_candidates else list(reference_candidates)
    ref = int(rng.choice(pool))
    candidates = [t for t in range(max(0, ref - frame_range), min(length, ref + frame_range + 1)) if t != ref]
    need = num_frames - 1
    if need == 0:
        others: list[int] = []
    elif not candidates:
        others = [ref] * need
    else:
        others = [int(t) for t in rng.choice(candidates, size=need, replace=len(candidates) < need)]
    frames = sorted(others + [ref])
    if shuffle:
        rng.shuffle(frames)
    return frames


def usable_frames(video: dict, is_usable: Callable[[dict], bool] | None = None) -> list[int]:
    """Indices of the frames of a video dict with at least one usable object: non-crowd, or
    ``is_usable(object)`` when given."""
    if is_usable is None:
        is_usable = _not_crowd
    return [t for t, objs in enumerate(video.get("annotations") or []) if any(map(is_usable, objs))]


def _not_crowd(obj: dict) -> bool:
    return not obj.get("iscrowd", 0)


def reference_positions(query_ids: torch.Tensor, reference_ids: torch.Tensor) -> torch.Tensor:
    """For each query track id (Q,), 1 + its row in ``reference_ids`` (R,), or 0 if absent -> int64 (Q,).

    (The SipMask-VIS / MaskTrack R-CNN matching target between a query and a reference frame.)
    """
    if len(reference_ids) == 0:
        return torch.zeros(len(query_ids), dtype=torch.int64, device=query_ids.device)
    same = query_ids[:, None] == reference_ids[None, :]
    return torch.where(same.any(1), same.float().argmax(1) + 1, torch.zeros_like(query_ids)).long()


class VideoClipMapper:
    """Video dict -> clip dict for training (or a deterministic clip of the first frames if not
    ``is_train``).

    Output: ``{"image": [CHW uint8 tensor] * N, "instances": [Instances] * N, "file_names",
    "frame_indices", "height", "width", "length", "video_id"}``; ``Instances`` carry ``gt_boxes``,
    ``gt_classes``, ``gt_masks`` (``BitMasks`` for RLE annotations), ``gt_ids``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list[T.Augmentation | T.Transform],
        image_format: str,
        sampling_frame_num: int = 2,
        sampling_frame_range: int = 20,
        sampling_frame_shuffle: bool = False,
        mask_format: str = "bitmask",
        recompute_boxes: bool = True,
    ):
        if sampling_frame_num < 1:
            raise ValueError(f"sampling_frame_num must be >= 1, got {sampling_frame_num}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.sampling_frame_shuffle = sampling_frame_shuffle
        self.mask_format = mask_format
        self.recompute_boxes = recompute_boxes
        logger.info(f"[VideoClipMapper] train={is_train} augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict[str, Any]:
        augs = utils.build_augmentation(cfg, is_train)
        if is_train and cfg.INPUT.CROP.ENABLED:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "sampling_frame_num": cfg.INPUT.get("SAMPLING_FRAME_NUM", 2),
            "sampling_frame_range": cfg.INPUT.get("SAMPLING_FRAME_RANGE", 20),
            "sampling_frame_shuffle": cfg.INPUT.get("SAMPLING_FRAME_SHUFFLE", False),
            "mask_format": cfg.INPUT.MASK_FORMAT,
            "recompute_boxes": cfg.INPUT.CROP.ENABLED,
        }

    def _select_frames(self, video: dict) -> list[int]:
        length = len(video["file_names"])
        if not self.is_train:
            return [min(t, length - 1) for t in range(self.sampling_frame_num)]
        return sample_clip_frames(
            np.random,  # Detectron2 seeds the global generator per data-loader worker
            length,
            self.sampling_frame_num,
            self.sampling_frame_range,
            usable_frames(video),
            self.sampling_frame_shuffle,
        )

    def __call__(self, video: dict, frames: list[int] | None = None) -> dict:
        """The clip of ``video`` at ``frames`` (indices into its frame list), or at the frames
        :meth:`_select_frames` draws when None."""
        for key in ("file_names", "height", "width"):
            if key not in video:
                raise KeyError(f"video dict lacks {key!r} (keys: {sorted(video)})")
        file_names = video["file_names"]
        if not file_names:
            raise ValueError(f"video {video.get('video_id')} has no frames")
        annotations = video.get("annotations")
        if annotations is not None and len(annotations) != len(file_names):
            raise ValueError(
                f"video {video.get('video_id')}: {len(annotations)} annotation lists for {len(file_names)} frames"
            )
        if frames is None:
            frames = self._select_frames(video)

        images, instances, transforms = [], [], None
        for t in frames:
            image = utils.read_image(file_names[t], format=self.image_format)
            if image.shape[:2] != (video["height"], video["width"]):
                raise ValueError(
                    f"{file_names[t]}: size {image.shape[1]}x{image.shape[0]} (WxH), the video dict says "
                    f"{video['width']}x{video['height']}"
                )
            if transforms is None:  # sample once per clip, reuse on every frame
                aug_input = T.AugInput(image)
                transforms = self.augmentations(aug_input)
                image = aug_input.image
            else:
                image = transforms.apply_image(image)
            images.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))))
            if annotations is not None:
                instances.append(self._frame_instances(annotations[t], transforms, image.shape[:2]))

        return {
            "image": images,
            "instances": instances,
            "file_names": [file_names[t] for t in frames],
            "frame_indices": frames,
            "height": video["height"],
            "width": video["width"],
            "length": len(file_names),
            "video_id": video.get("video_id"),
        }

    def _frame_instances(
        self, objects: list[dict], transforms: T.TransformList, image_shape: tuple
    ) -> Instances:
        """Transformed non-crowd objects of one frame -> Instances with gt_ids (empty rows dropped)."""
        objects = [copy.deepcopy(o) for o in objects if not o.get("iscrowd", 0)]
        annos = [utils.transform_instance_annotations(o, transforms, image_shape) for o in objects]
        # RLE segmentations become (H, W) arrays after transforming: only bitmasks can hold them.
        polygons_only = all(isinstance(a.get("segmentation", []), list) for a in annos)
        mask_format = self.mask_format if polygons_only else "bitmask"
        inst = utils.annotations_to_instances(annos, image_shape, mask_format=mask_format)
        inst.gt_ids = torch.tensor([int(o["id"]) for o in objects], dtype=torch.int64)
        if not inst.has("gt_masks"):
            inst.gt_masks = (
                BitMasks(torch.zeros((0, *image_shape), dtype=torch.bool))
                if mask_format == "bitmask"
                else PolygonMasks([])
            )
        if self.recompute_boxes and len(inst):
            inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        return utils.filter_empty_instances(inst)
