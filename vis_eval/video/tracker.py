"""Trackers for image models, registered in Detectron2's ``TRACKER_HEADS_REGISTRY``.

The streaming runner (:mod:`vis_eval.video.runner`) builds one with
``detectron2.tracking.base_tracker.build_tracker_head(cfg)`` from ``cfg.TRACKER_HEADS.TRACKER_NAME``
at each video start and calls ``tracker.update(instances)`` once per frame, in frame order, with the
frame's ``Instances`` (``pred_boxes``, ``scores``, ``pred_classes`` and usually ``pred_masks``, at the
frame's size). ``update`` returns the detections to output for the frame with ``ID``: a list of ints,
>= 0 and unique within the frame, the same id in different frames meaning the same object
(Detectron2's tracking convention, read by ``VideoVisualizer``, whose colours are keyed by value).
A tracker's state must be bounded by the number of live tracks (those not yet expired), never by
the number of frames, so that memory stays flat over long videos.

:class:`MaskIoUTracker` associates by mask IoU and class, so that any image model (CenterMask,
SipMask) gives video results. Video models that associate by themselves (SipMask-VIS, STMask) need
no tracker; see the runner module.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.structures import Instances, pairwise_iou
from detectron2.tracking.base_tracker import TRACKER_HEADS_REGISTRY, BaseTracker
from scipy.optimize import linear_sum_assignment

__all__ = ["MaskIoUTracker", "binary_masks", "mask_iou"]


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


@TRACKER_HEADS_REGISTRY.register()
class MaskIoUTracker(BaseTracker):
    """Associate detections with live tracks by mask IoU (box IoU when there are no masks) and class.

    Per frame: detections below ``score_threshold`` are discarded; the rest are matched one-to-one to
    live tracks by maximum total IoU (Hungarian) among pairs with IoU >= ``iou_threshold`` (and the
    same class if ``match_class``); matched detections take the track's id and replace its mask/box;
    unmatched detections start new tracks. A track unmatched for more than ``max_age`` consecutive
    frames expires and is forgotten: the state holds exactly the live tracks (:attr:`num_tracks`),
    at most the tracks seen in the last ``max_age + 1`` frames, whatever the video's length.
    One tracker follows one video; build a new one for the next video.
    """

    @configurable
    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        score_threshold: float = 0.05,
        max_age: int = 5,
        match_class: bool = True,
    ):
        super().__init__()
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.iou_threshold = iou_threshold
        self.score_threshold = score_threshold
        self.max_age = max_age
        self.match_class = match_class
        # Live tracks (BaseTracker's ``_prev_instances``): pred_classes, pred_boxes, [pred_masks (bool)],
        # track_id (int64), age (frames since last matched); ``_id_count``: the next new id.

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        """Arguments from ``cfg.TRACKER_HEADS.MASK_IOU_TRACKER`` (see ``vis_eval.config``)."""
        node = cfg.TRACKER_HEADS.MASK_IOU_TRACKER
        return {
            "iou_threshold": node.IOU_THRESHOLD,
            "score_threshold": node.SCORE_THRESHOLD,
            "max_age": node.MAX_AGE,
            "match_class": node.MATCH_CLASS,
        }

    @property
    def num_tracks(self) -> int:
        """Number of live (remembered) tracks."""
        return 0 if self._prev_instances is None else len(self._prev_instances)

    def _similarity(self, det: Instances, tracks: Instances) -> torch.Tensor:
        """(N, M) IoU between detections and live tracks (both with bool masks, if any), -1 where
        they may not match."""
        if det.has("pred_masks") != tracks.has("pred_masks"):
            raise ValueError("detections must consistently have (or not have) pred_masks within a video")
        if det.image_size != tracks.image_size:
            raise ValueError(
                f"frame size changed within a video: {tracks.image_size} -> {det.image_size}; "
                "build a new tracker for each video"
            )
        if det.has("pred_masks"):
            iou = mask_iou(det.pred_masks, tracks.pred_masks)
        else:
            iou = pairwise_iou(det.pred_boxes, tracks.pred_boxes)
        if self.match_class:
            same = det.pred_classes[:, None] == tracks.pred_classes[None, :]
            iou = torch.where(same, iou, torch.full_like(iou, -1.0))
        return iou

    def update(self, instances: Instances) -> Instances:
        """Associate one frame's detections; returns those kept (score >= ``score_threshold``), in
        their input order, with ``ID`` (list of ints)."""
        if not isinstance(instances, Instances):
            raise TypeError(f"update() takes the frame's Instances, got {type(instances).__name__}")
        det = instances[instances.scores >= self.score_threshold]
        device = det.scores.device
        tracks = None if self._prev_instances is None else self._prev_instances.to(device)
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
            ids[~new] = tracks.track_id[det_to_track[~new]]
        num_new = int(new.sum())
        ids[new] = torch.arange(self._id_count, self._id_count + num_new, device=device)
        self._id_count += num_new
        det.ID = ids.tolist()

        # New state: unmatched tracks that are young enough, plus every kept detection (age 0).
        state.track_id = ids
        state.age = torch.zeros(n, dtype=torch.int64, device=device)
        if m > 0:
            unmatched = torch.ones(m, dtype=torch.bool, device=device)
            unmatched[det_to_track[~new]] = False
            tracks.age = tracks.age + 1
            old = tracks[unmatched & (tracks.age <= self.max_age)]
            state = Instances.cat([old, state]) if len(state) else old
        self._prev_instances = state
        return det
