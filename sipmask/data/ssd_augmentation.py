"""The real-time SipMask models' "SSD-style" training pipeline (spec §2.9): photometric distortion,
Expand, MinIoURandomCrop, resize to a fixed size ignoring the aspect ratio, horizontal flip.

Detectron2's ``DatasetMapper`` cannot express these (the crop samples against the gt boxes and drops
instances whose centres fall outside), so :class:`SSDDatasetMapper` is a mapper of its own. Masks
are rasterised once at the original size and then cropped / padded / resized as bitmasks.
"""

from __future__ import annotations

import copy
import os

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, Boxes, Instances

__all__ = ["SSDDatasetMapper", "expand", "min_iou_random_crop", "photometric_distortion"]


def photometric_distortion(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmdet ``PhotoMetricDistortion`` on a float32 BGR image (each step with p = 0.5, no clipping)."""
    img = img.astype(np.float32, copy=True)
    if rng.integers(2):
        img += rng.uniform(-32, 32)
    contrast_first = rng.integers(2)
    if contrast_first and rng.integers(2):
        img *= rng.uniform(0.5, 1.5)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if rng.integers(2):
        hsv[..., 1] *= rng.uniform(0.5, 1.5)
    if rng.integers(2):
        hue = hsv[..., 0] + rng.uniform(-18, 18)
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
        hsv[..., 0] = hue
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not contrast_first and rng.integers(2):
        img *= rng.uniform(0.5, 1.5)
    if rng.integers(2):
        img = img[..., rng.permutation(3)]
    return np.ascontiguousarray(img)


def expand(
    img: np.ndarray,
    boxes: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    mean: tuple[float, float, float],
    ratio_range: tuple[float, float] = (1.0, 4.0),
    prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place the image at a random offset on a mean-filled canvas ``ratio`` times larger."""
    if rng.uniform() > prob:
        return img, boxes, masks
    h, w, c = img.shape
    ratio = rng.uniform(*ratio_range)
    new_h, new_w = int(h * ratio), int(w * ratio)
    left = int(rng.uniform(0, new_w - w))
    top = int(rng.uniform(0, new_h - h))
    canvas = np.empty((new_h, new_w, c), dtype=img.dtype)
    canvas[...] = np.asarray(mean, dtype=img.dtype)
    canvas[top : top + h, left : left + w] = img
    new_masks = np.zeros((masks.shape[0], new_h, new_w), dtype=masks.dtype)
    new_masks[:, top : top + h, left : left + w] = masks
    return canvas, boxes + np.array([left, top, left, top], dtype=boxes.dtype), new_masks


def _iou_plus1(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(patch[:2], boxes[:, :2])
    rb = np.minimum(patch[2:], boxes[:, 2:])
    wh = np.clip(rb - lt + 1, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_p = (patch[2] - patch[0] + 1) * (patch[3] - patch[1] + 1)
    area_b = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return inter / (area_p + area_b - inter)


def min_iou_random_crop(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
    min_crop_size: float = 0.3,
    max_rounds: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mmdet ``MinIoURandomCrop``: pick a mode from {no crop, *min_ious, 0}; try 50 patches whose IoU
    with every gt box is >= the mode and that contain at least one gt centre; keep those gts.

    ``max_rounds`` bounds the number of modes tried (mmdet loops forever); no crop after that.
    """
    if boxes.shape[0] == 0:
        return img, boxes, classes, masks
    modes = (1.0, *min_ious, 0.0)
    h, w = img.shape[:2]
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(max_rounds):
        mode = modes[rng.integers(len(modes))]
        if mode == 1.0:
            return img, boxes, classes, masks
        for _ in range(50):
            new_w = rng.uniform(min_crop_size * w, w)
            new_h = rng.uniform(min_crop_size * h, h)
            if not 0.5 <= new_h / new_w <= 2:
                continue
            left = rng.uniform(0, w - new_w)
            top = rng.uniform(0, h - new_h)
            patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)])
            if _iou_plus1(patch, boxes).min() < mode:
                continue
            keep = (
                (centers[:, 0] > patch[0])
                & (centers[:, 1] > patch[1])
                & (centers[:, 0] < patch[2])
                & (centers[:, 1] < patch[3])
            )
            if not keep.any():
                continue
            new_boxes = boxes[keep].copy()
            new_boxes[:, 2:] = np.minimum(new_boxes[:, 2:], patch[2:])
            new_boxes[:, :2] = np.maximum(new_boxes[:, :2], patch[:2])
            new_boxes -= np.tile(patch[:2], 2)
            x1, y1, x2, y2 = patch
            return img[y1:y2, x1:x2], new_boxes, classes[keep], masks[keep][:, y1:y2, x1:x2]
    return img, boxes, classes, masks


class SSDDatasetMapper:
    """Dataset dict -> model input with the SSD-style augmentation, resized to ``size`` (H, W)."""

    @configurable
    def __init__(
        self,
        *,
        image_format: str,
        size: tuple[int, int],
        mean: tuple[float, float, float],
        flip_prob: float = 0.5,
        seed: int | None = None,
    ):
        """
        Args:
            seed: ``None`` (training): every call seeds its draws from the global numpy RNG, which
                Detectron2 reseeds per data-loader worker (``seed_all_rng``), so workers differ and
                a seeded run repeats. An int: a private stream per process, split by worker id.
        """
        self.image_format = image_format
        self.size = tuple(size)
        self.mean = tuple(mean)
        self.flip_prob = flip_prob
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        if not is_train:
            raise ValueError("SSDDatasetMapper is a training mapper; inference resizes inside the model")
        size = cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN
        if not size:
            raise ValueError("the SSD augmentation needs MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN")
        if cfg.INPUT.FORMAT != "BGR":
            raise ValueError("the SSD augmentation fills with the BGR pixel mean: use INPUT.FORMAT BGR")
        return {"image_format": cfg.INPUT.FORMAT, "size": tuple(size), "mean": tuple(cfg.MODEL.PIXEL_MEAN)}

    def _generator(self) -> np.random.Generator:
        """The generator for one call. A generator created once and copied into every data-loader
        worker would replay the same draws in each, so without ``seed`` each call seeds a fresh one
        from the global numpy RNG; with ``seed`` one is (re)built in each process from
        ``(seed, worker id)``."""
        if self.seed is None:
            return np.random.default_rng(np.random.randint(2**63 - 1, dtype=np.int64))
        if self._rng is None or self._rng_pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([self.seed, 0 if info is None else info.id + 1])
            self._rng_pid = os.getpid()
        return self._rng

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        img = utils.read_image(d["file_name"], format=self.image_format).astype(np.float32)
        h, w = img.shape[:2]
        annos = [a for a in d.pop("annotations", []) if not a.get("iscrowd", 0)]
        inst = utils.annotations_to_instances(annos, (h, w), mask_format="bitmask")
        boxes = inst.gt_boxes.tensor.numpy().astype(np.float32)
        classes = inst.gt_classes.numpy()
        masks = inst.gt_masks.tensor.numpy() if len(annos) else np.zeros((0, h, w), dtype=bool)

        rng = self._generator()
        img = photometric_distortion(img, rng)
        img, boxes, masks = expand(img, boxes, masks, rng, self.mean)
        img, boxes, classes, masks = min_iou_random_crop(img, boxes, classes, masks, rng)

        oh, ow = img.shape[:2]
        th, tw = self.size
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR)
        boxes = boxes * np.array([tw / ow, th / oh, tw / ow, th / oh], dtype=np.float32)
        mask_t = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
        if mask_t.shape[0]:
            mask_t = torch.nn.functional.interpolate(mask_t, size=(th, tw), mode="nearest")
        masks_out = mask_t.new_zeros((0, th, tw)) if mask_t.shape[0] == 0 else mask_t[:, 0]
        if rng.uniform() < self.flip_prob:
            img = img[:, ::-1]
            masks_out = masks_out.flip(-1)
            boxes = np.stack([tw - boxes[:, 2], boxes[:, 1], tw - boxes[:, 0], boxes[:, 3]], axis=1)

        out = Instances((th, tw))
        out.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        out.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
        out.gt_masks = BitMasks(masks_out > 0.5)
        d["image"] = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
        d["instances"] = utils.filter_empty_instances(out)
        return d
