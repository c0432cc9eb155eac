"""CenterROIHeads: CenterMask's RoI stage (no box head; SAG-Mask + MaskIoU on FCOS boxes)."""

from __future__ import annotations

import math

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, ROIHeads, select_foreground_proposals
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from .mask_head import mask_inference, mask_loss
from .maskiou_head import build_maskiou_head, maskiou_inference, maskiou_loss, maskiou_targets
from .pooler import CenterROIPooler

__all__ = ["CenterROIHeads"]

# Score given to gt boxes appended to the proposals: logit of 1 - 1e-10, as centermask2.
_GT_PROPOSAL_SCORE = math.log((1.0 - 1e-10) / 1e-10)


@ROI_HEADS_REGISTRY.register()
class CenterROIHeads(ROIHeads):
    """Mask branch of CenterMask on the FCOS detections.

    Training: FCOS proposals (``pred_boxes``) are detached, gt boxes appended, matched at IoU
    0.5 and subsampled as in :class:`ROIHeads`; the foreground ones feed ``mask_head`` and
    ``maskiou_head``. Losses: ``loss_mask`` (+ ``loss_maskiou``).
    Inference: adds ``pred_masks`` (n, 1, 2R, 2R) and ``mask_scores`` to the FCOS detections.
    """

    @configurable
    def __init__(
        self,
        *,
        mask_in_features: list[str],
        mask_pooler: CenterROIPooler | None,
        mask_head: nn.Module | None,
        maskiou_head: nn.Module | None = None,
        maskiou_loss_weight: float = 1.0,
        proposal_append_gt: bool = True,
        **kwargs,
    ):
        # The parent's gt-appending helper needs RPN-style proposals; appending is done here.
        super().__init__(proposal_append_gt=False, **kwargs)
        self.append_gt = proposal_append_gt
        self.mask_in_features = list(mask_in_features)
        self.mask_on = mask_head is not None
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.maskiou_on = maskiou_head is not None
        self.maskiou_head = maskiou_head
        self.maskiou_loss_weight = maskiou_loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        ret["mask_in_features"] = in_features
        ret["mask_pooler"] = ret["mask_head"] = ret["maskiou_head"] = None
        ret["maskiou_loss_weight"] = cfg.MODEL.MASKIOU_LOSS_WEIGHT
        if not cfg.MODEL.MASK_ON:
            return ret
        c = cfg.MODEL.ROI_MASK_HEAD
        resolution = c.POOLER_RESOLUTION
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"mask in_features must share one channel count, got {channels}")
        pooled_shape = ShapeSpec(channels=channels.pop(), height=resolution, width=resolution)
        ret["mask_pooler"] = CenterROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=c.POOLER_SAMPLING_RATIO,
            pooler_type=c.POOLER_TYPE,
            assign_crit=c.ASSIGN_CRITERION,
        )
        ret["mask_head"] = ROI_MASK_HEAD_REGISTRY.get(c.NAME)(cfg, pooled_shape)
        if cfg.MODEL.MASKIOU_ON:
            ret["maskiou_head"] = build_maskiou_head(cfg, pooled_shape)
        return ret

    def _to_proposals(self, detections: Instances, gt: Instances) -> Instances:
        """FCOS detections (+ gt boxes) as RoI proposals, detached; the input is not modified."""
        proposals = Instances(
            detections.image_size,
            proposal_boxes=Boxes(detections.pred_boxes.tensor.detach()),
            scores=detections.scores.detach(),
            pred_classes=detections.pred_classes,
        )
        if not self.append_gt or len(gt) == 0:
            return proposals
        gt_proposals = Instances(
            detections.image_size,
            proposal_boxes=Boxes(gt.gt_boxes.tensor.to(proposals.proposal_boxes.tensor)),
            scores=torch.full((len(gt),), _GT_PROPOSAL_SCORE, device=proposals.scores.device),
            pred_classes=gt.gt_classes.to(detections.pred_classes),
        )
        return Instances.cat([proposals, gt_proposals])

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        proposals = [self._to_proposals(p, t) for p, t in zip(proposals, targets, strict=True)]
        return super().label_and_sample_proposals(proposals, targets)

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        del images
        if self.training:
            assert targets is not None, "CenterROIHeads training needs targets"
            if not self.mask_on:
                return [], {}
            proposals = self.label_and_sample_proposals(proposals, targets)
            return [], self._forward_mask_train(features, proposals)
        return self.forward_with_given_boxes(features, proposals), {}

    def _pool(self, features: dict[str, Tensor], boxes: list[Boxes], instances: list[Instances]) -> Tensor:
        x = [features[f] for f in self.mask_in_features]
        return self.mask_pooler(x, boxes, [inst.image_size for inst in instances])

    def _forward_mask_train(
        self, features: dict[str, Tensor], proposals: list[Instances]
    ) -> dict[str, Tensor]:
        fg_proposals, _ = select_foreground_proposals(proposals, self.num_classes)
        pooled = self._pool(features, [p.proposal_boxes for p in fg_proposals], fg_proposals)
        logits = self.mask_head(pooled)
        loss, gt_class_logits, gt_masks = mask_loss(logits, fg_proposals)
        losses = {"loss_mask": loss}
        if self.maskiou_on:
            gt_classes = torch.cat([p.gt_classes for p in fg_proposals]).to(torch.int64)
            targets = maskiou_targets(fg_proposals, gt_class_logits.detach(), gt_masks)
            # Not detached: like centermask2, the MaskIoU loss also trains the mask head and FPN.
            pred = self.maskiou_head(pooled, gt_class_logits.sigmoid()[:, None])
            losses["loss_maskiou"] = maskiou_loss(pred, gt_classes, targets) * self.maskiou_loss_weight
        return losses

    def forward_with_given_boxes(
        self, features: dict[str, Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Add ``pred_masks`` (and ``mask_scores``) to detections with ``pred_boxes``,
        ``pred_classes`` and ``scores``. Boxes are pooled unclipped, as in centermask2."""
        assert not self.training
        if not self.mask_on:
            return instances
        pooled = self._pool(features, [inst.pred_boxes for inst in instances], instances)
        # float32 outputs whatever the precision the heads ran in (MODEL.INFERENCE.AMP)
        masks = mask_inference(self.mask_head(pooled).float(), instances)
        if self.maskiou_on:
            maskiou_inference(self.maskiou_head(pooled, masks).float(), instances)
        return instances
