"""SipMask-VIS meta-architecture (Cao et al., ECCV 2020; spec sipmask_vis.md): the SipMask image
model plus a tracking branch trained on query / reference frame pairs and an online association.
"""

from __future__ import annotations

import logging

import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor

from vis_eval.data.video_mapper import reference_positions

from .meta_arch import SipMask
from .tracking import (
    EmbeddingTracker,
    SipMaskTrackHead,
    box_centres,
    embeddings_at,
    jittered_centres,
    match_logits,
)

__all__ = ["SipMaskVIS"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class SipMaskVIS(SipMask):
    """SipMask with a tracking branch (video instance segmentation).

    Training input: clips of >= 2 frames (``"image"``: list of (C, H, W), ``"instances"``: list of
    ``Instances`` with ``gt_ids``), frame 0 the query, frame 1 the reference (e.g. from the
    ``SipMaskVISPairMapper``); losses: the four image losses on the query + ``loss_match`` (§4.3).

    Inference: one frame at a time, in video order (the streaming runner); each output ``Instances``
    carries ``ID``. :meth:`reset_video` starts a new video.
    """

    @configurable
    def __init__(
        self,
        *,
        ref_jitter: float = 0.05,
        match_coeffs: tuple[float, float, float] = (1.0, 2.0, 10.0),
        legacy_first_frame: bool = False,
        max_age: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(self.head, SipMaskTrackHead):
            raise TypeError("SipMaskVIS needs a SipMaskTrackHead")
        self.ref_jitter = ref_jitter
        self.tracker = EmbeddingTracker(match_coeffs, legacy_first_frame, max_age)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        c = cfg.MODEL.SIPMASK
        ret.update(
            ref_jitter=c.TRACK_REF_JITTER,
            match_coeffs=tuple(c.MATCH_COEFFS),
            legacy_first_frame=c.TRACK_LEGACY_FIRST_FRAME,
            max_age=c.TRACK_MAX_AGE,
        )
        return ret

    @classmethod
    def build_head(cls, cfg, input_shape: list[ShapeSpec]) -> SipMaskTrackHead:
        return SipMaskTrackHead(cfg, input_shape)

    @property
    def track_stride(self) -> int:
        return self.strides[0]

    def reset_video(self) -> None:
        """Forget the previous video's instances (the streaming runner calls this per video)."""
        self.tracker.reset()

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return super().forward(batched_inputs)
        for x in batched_inputs:
            if not isinstance(x.get("image"), (list, tuple)) or len(x["image"]) < 2 or "instances" not in x:
                raise ValueError(
                    "SipMaskVIS trains on query / reference frame pairs: each input needs 'image' and "
                    "'instances' lists of >= 2 frames (INPUT.DATASET_MAPPER_NAME: SipMaskVISPairMapper "
                    "on a video dataset)"
                )
        n = len(batched_inputs)
        frames = [{"image": x["image"][0]} for x in batched_inputs] + [
            {"image": x["image"][1]} for x in batched_inputs
        ]
        images = self.preprocess_image(frames)
        features = self.backbone(images.tensor)
        feats = [features[f] for f in self.head_in_features]
        preds = self.head([f[:n] for f in feats])
        ref_track = self.head.track_map([f[n:] for f in feats[:3]])
        query_images = ImageList(images.tensor[:n], images.image_sizes[:n])
        ref_images = ImageList(images.tensor[n:], images.image_sizes[n:])
        query_gt = self.prepare_gt_instances([x["instances"][0] for x in batched_inputs], query_images)
        ref_gt = self.prepare_gt_instances([x["instances"][1] for x in batched_inputs], ref_images)
        for inst in query_gt + ref_gt:
            if not inst.has("gt_ids"):
                raise ValueError("SipMaskVIS training needs gt_ids (track ids) in every frame's Instances")
        positives: list[tuple[Tensor, Tensor, Tensor]] = []
        losses = self.losses(query_images, preds, query_gt, positives_out=positives)
        losses["loss_match"] = self.match_loss(preds["track"], ref_track, positives, query_gt, ref_gt)
        return losses

    def match_loss(
        self,
        query_track: Tensor,
        ref_track: Tensor,
        positives: list[tuple[Tensor, Tensor, Tensor]],
        query_gt: list[Instances],
        ref_gt: list[Instances],
    ) -> Tensor:
        """``loss_match`` (§4.3): per image, cross-entropy of ``[0, q_j . r_1..K]`` against
        ``gt_pids`` over the mask-filtered positives, summed over images / number of images.

        Args:
            query_track, ref_track: (N, D, H, W) tracking maps; positives: per image (location
            indices, predicted boxes in input pixels (P, 4), gt indices (P,)).
        """
        loss = (query_track.sum() + ref_track.sum()) * 0  # keeps both maps in the graph (DDP)
        correct, total = 0, 0
        for i, (_, pred_boxes, gt_idx) in enumerate(positives):
            if gt_idx.numel() == 0:
                continue
            query = embeddings_at(query_track[i].float(), box_centres(pred_boxes), self.track_stride)
            ref_boxes = self._gt_boxes(ref_gt[i])
            ref_centres = jittered_centres(ref_boxes, self.ref_jitter)
            reference = embeddings_at(ref_track[i].float(), ref_centres, self.track_stride)
            logits = match_logits(query, reference)
            target = reference_positions(query_gt[i].gt_ids, ref_gt[i].gt_ids)[gt_idx]
            loss = loss + F.cross_entropy(logits, target)
            correct += int((logits.argmax(dim=1) == target).sum())
            total += target.numel()
        try:
            if total:
                get_event_storage().put_scalar("match_acc", 100.0 * correct / total)
        except AssertionError:  # no EventStorage outside a trainer
            pass
        return loss / max(len(positives), 1)

    # ------------------------------------------------------------------ inference
    def inference(self, images: ImageList, preds: dict, batched_inputs: list[dict]) -> list[dict]:
        """Per-frame detections (image model) + embeddings at their box centres + association; the
        images of a batch are taken as consecutive frames of one video."""
        results = super().inference(images, preds, batched_inputs)
        for i, result in enumerate(results):
            inst = result["instances"]
            h, w = images.image_sizes[i]
            out_h, out_w = inst.image_size
            boxes = inst.pred_boxes.tensor
            if self.box_plus_one:  # back to the authors' inclusive boxes
                boxes = boxes - boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
            boxes = boxes * boxes.new_tensor([w / out_w, h / out_h, w / out_w, h / out_h])
            embeddings = embeddings_at(preds["track"][i].float(), box_centres(boxes), self.track_stride)
            result["instances"] = self.tracker.update(inst, embeddings)
        return results
