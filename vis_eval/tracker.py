"""Online association of per-frame detections into tracks.

:class:`Associator` is the interface the streaming runner (:mod:`vis_eval.runner`) drives and that
video methods implement (SipMask-VIS: embedding + box IoU + class memory; STMask: temporal fusion
tracker). :class:`MaskIoUTracker` associates by mask IoU and class, so that any image model
(CenterMask, SipMask) produces video results.

Protocol (per video): ``reset()`` once before the first frame, then ``associator(output)`` once per
frame, in frame order, where ``output`` is the model's per-frame output dict (at least
``{"instances": Instances}`` at the frame's original size, with ``pred_boxes``, ``scores``,
``pred_classes`` and usually ``pred_masks``; a method may add keys for its own associator, e.g.
embeddings or features). It returns the frame's tracked ``Instances``: the detections to output for
that frame (a method may drop some, or add propagated ones) with ``pred_ids`` (int64 (N,), >= 0,
unique within the frame; the same id in different frames means the same object). State must be
bounded in the number of frames (prune or cap what is remembered) so that memory stays flat.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Instances, pairwise_iou
from scipy.optimize import linear_sum_assignment

__all__ = [
    "Associator",
    "MaskIoUTracker",
    "add_tracker_config",
    "binary_masks",
    "build_associator",
    "mask_iou",
]


class Associator(ABC):
    """Stateful per-video association; see the module docstring for the protocol."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all tracks: the next call is the first frame of a new video."""

    @abstractmethod
    def __call__(self, output: dict[str, Any]) -> Instances:
        """Associate one frame's model output; return its Instances with ``pred_ids`` (int64 (N,))."""


def add_tracker_config(cfg: CfgNode) -> None:
    """Keys of :class:`MaskIoUTracker` (``MODEL.MASK_IOU_TRACKER``)."""
    cfg.MODEL.MASK_IOU_TRACKER = CfgNode()
    cfg.MODEL.MASK_IOU_TRACKER.IOU_THRESHOLD = 0.3
    cfg.MODEL.MASK_IOU_TRACKER.SCORE_THRESHOLD = 0.05
    cfg.MODEL.MASK_IOU_TRACKER.MAX_AGE = 5
    cfg.MODEL.MASK_IOU_TRACKER.MATCH_CLASS = True


def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of bool masks (N, H, W) x (M, H, W) -> float (N, M); 0 where both are empty."""
    if masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(f"mask sizes differ: {tuple(masks1.shape[1:])} vs {tuple(masks2.shape[1:])}")
    a = masks1.flatten(1).float()
    b = masks2.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def binary_masks(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks (N, H, W) from bool, integer or soft (probability, thresholded at 0.5) masks."""
    if masks.dtype == torch.bool:
        return masks
    if masks.is_floating_point():
        return masks >= 0.5
    return masks != 0


class MaskIoUTracker(Associator):
    """Associate detections with live tracks by mask IoU (box IoU when there are no masks) and class.

    Per frame: detections below ``score_threshold`` are discarded; the rest are matched one-to-one to
    live tracks by maximum total IoU (Hungarian) among pairs with IoU >= ``iou_threshold`` (and the
    same class if ``match_class``); matched detections take the track's id and replace its mask/box;
    unmatched detections start new tracks. A track unmatched for more than ``max_age`` consecutive
    frames is forgotten, so the state holds at most the tracks seen in the last ``max_age + 1`` frames.
    """

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        score_threshold: float = 0.05,
        max_age: int = 5,
        match_class: bool = True,
    ):
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.iou_threshold = iou_threshold
        self.score_threshold = score_threshold
        self.max_age = max_age
        self.match_class = match_class
        self.reset()

    @classmethod
    def from_config(cls, cfg: CfgNode) -> MaskIoUTracker:
        node = cfg.MODEL.get("MASK_IOU_TRACKER", None)
        if node is None:
            return cls()
        return cls(
            iou_threshold=node.IOU_THRESHOLD,
            score_threshold=node.SCORE_THRESHOLD,
            max_age=node.MAX_AGE,
            match_class=node.MATCH_CLASS,
        )

    def reset(self) -> None:
        self._next_id = 0
        # Live tracks: pred_ids, pred_classes, pred_boxes, [pred_masks], age (frames since last matched).
        self._tracks: Instances | None = None

    @property
    def num_tracks(self) -> int:
        """Number of live (remembered) tracks."""
        return 0 if self._tracks is None else len(self._tracks)

    def _similarity(self, det: Instances, tracks: Instances) -> torch.Tensor:
        """(N, M) IoU between detections and live tracks (both with bool masks, if any), -1 where
        they may not match."""
        if det.has("pred_masks") != tracks.has("pred_masks"):
            raise ValueError("detections must consistently have (or not have) pred_masks within a video")
        if det.image_size != tracks.image_size:
            raise ValueError(
                f"frame size changed within a video: {tracks.image_size} -> {det.image_size}; "
                "call reset() between videos"
            )
        if det.has("pred_masks"):
            iou = mask_iou(det.pred_masks, tracks.pred_masks)
        else:
            iou = pairwise_iou(det.pred_boxes, tracks.pred_boxes)
        if self.match_class:
            same = det.pred_classes[:, None] == tracks.pred_classes[None, :]
            iou = torch.where(same, iou, torch.full_like(iou, -1.0))
        return iou

    def __call__(self, output: dict[str, Any]) -> Instances:
        if "instances" not in output:
            raise KeyError(f"model output has no 'instances' (keys: {sorted(output)})")
        det = output["instances"]
        det = det[det.scores >= self.score_threshold]
        device = det.scores.device
        tracks = None if self._tracks is None else self._tracks.to(device)
        n, m = len(det), self.num_tracks
        # The kept detections as track state (masks thresholded once, for matching and for memory).
        state = Instances(det.image_size, pred_classes=det.pred_classes, pred_boxes=det.pred_boxes)
        if det.has("pred_masks"):
            state.pred_masks = binary_masks(det.pred_masks)

        det_to_track = torch.full((n,), -1, dtype=torch.int64, device=device)
        if n > 0 and m > 0:
            sim = self._similarity(state, tracks).cpu().numpy()
            rows, cols = linear_sum_assignment(np.clip(sim, 0, None), maximize=True)
            # IoU 0 never matches, even with iou_threshold = 0.
            ok = (sim[rows, cols] >= self.iou_threshold) & (sim[rows, cols] > 0)
            det_to_track[torch.as_tensor(rows[ok], device=device)] = torch.as_tensor(cols[ok], device=device)

        new = det_to_track < 0
        ids = torch.empty(n, dtype=torch.int64, device=device)
        if m > 0:
            ids[~new] = tracks.pred_ids[det_to_track[~new]]
        num_new = int(new.sum())
        ids[new] = torch.arange(self._next_id, self._next_id + num_new, device=device)
        self._next_id += num_new
        det.pred_ids = ids

        # New state: unmatched tracks that are young enough, plus every kept detection (age 0).
        state.pred_ids = ids
        state.age = torch.zeros(n, dtype=torch.int64, device=device)
        if m > 0:
            unmatched = torch.ones(m, dtype=torch.bool, device=device)
            unmatched[det_to_track[~new]] = False
            tracks.age = tracks.age + 1
            old = tracks[unmatched & (tracks.age <= self.max_age)]
            state = Instances.cat([old, state]) if len(state) else old
        self._tracks = state
        return det


def build_associator(cfg: CfgNode | None, model: torch.nn.Module | None) -> Associator:
    """The model's own associator if it has one (``model.build_associator() -> Associator``), else a
    :class:`MaskIoUTracker` configured by ``cfg.MODEL.MASK_IOU_TRACKER`` (defaults if absent or no cfg)."""
    builder = getattr(model, "build_associator", None)
    if builder is None and hasattr(model, "module"):  # DistributedDataParallel
        builder = getattr(model.module, "build_associator", None)
    if builder is not None:
        associator = builder()
        if not isinstance(associator, Associator):
            raise TypeError(f"{type(model).__name__}.build_associator() returned {type(associator).__name__}")
        return associator
    return MaskIoUTracker() if cfg is None else MaskIoUTracker.from_config(cfg)
