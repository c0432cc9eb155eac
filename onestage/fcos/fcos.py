"""FCOS as a Detectron2 proposal generator (centermask2 / AdelaiDet "improved FCOS")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from fvcore.nn import sigmoid_focal_loss_jit
from torch import Tensor, nn

from onestage.inputs import check_finite_images
from onestage.layers import distance_to_boxes, iou_loss, reduce_mean

from .decode import select_fcos_detections
from .head import FCOSHead
from .locations import compute_locations
from .targets import centerness_targets, fcos_assign_targets, per_location_stride_and_range

__all__ = ["FCOS", "fcos_detections_single_image"]


def _flatten_levels(tensors: list[Tensor]) -> list[Tensor]:
    """Per-level (N, C, H, W) -> per-level (N, H*W, C), cells row-major."""
    return [permute_to_N_HWA_K(t, t.shape[1]) for t in tensors]


def fcos_detections_single_image(
    logits: list[Tensor],
    regs: list[Tensor],
    ctrs: list[Tensor],
    locations: list[Tensor],
    strides: list[int],
    image_size: tuple[int, int],
    score_thresh: float,
    pre_nms_topk: int,
    nms_thresh: float,
    post_nms_topk: int,
    thresh_with_ctr: bool = False,
) -> Instances:
    """AdelaiDet's FCOS post-processing of one image (centermask spec 4.5).

    Args:
        logits: per level (HW_l, K) class logits.
        regs: per level (HW_l, 4) distances in units of the level's stride.
        ctrs: per level (HW_l,) centerness logits.
        locations: per level (HW_l, 2) ``(x, y)``.

    Returns:
        Instances with ``pred_boxes`` (unclipped), ``scores`` = sqrt(cls * ctr), ``pred_classes``,
        ``locations``, sorted by decreasing score; centermask2 keeps every detection tied with the
        ``post_nms_topk``-th.
    """
    boxes = [distance_to_boxes(loc, reg * s) for loc, reg, s in zip(locations, regs, strides, strict=True)]
    rows, classes, scores = select_fcos_detections(
        boxes,
        [x.sigmoid() for x in logits],
        [x.sigmoid() for x in ctrs],
        score_thresh,
        pre_nms_topk,
        nms_thresh,
        post_nms_topk,
        thresh_with_ctr=thresh_with_ctr,
        sorted_topk=False,
        keep_ties=True,
    )
    result = Instances(image_size)
    result.pred_boxes = Boxes(torch.cat(boxes)[rows])
    result.scores = scores
    result.pred_classes = classes
    result.locations = torch.cat(locations)[rows]
    return result


@PROPOSAL_GENERATOR_REGISTRY.register()
class FCOS(nn.Module):
    """FCOS detector used as CenterMask's proposal generator.

    Training returns ``(proposals or None, losses)`` with losses ``loss_fcos_cls``,
    ``loss_fcos_loc``, ``loss_fcos_ctr``; proposals (detached detections, train settings) are
    produced only when ``yield_proposals`` (``MODEL.MASK_ON``). Inference returns
    ``(detections, {})``; at test time the detections are CenterMask's final boxes.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: list[str],
        fcos_head: nn.Module,
        strides: list[int],
        num_classes: int,
        sizes_of_interest: list[float],
        center_sample_radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loc_loss_type: str = "giou",
        score_thresh: tuple[float, float] = (0.05, 0.05),
        pre_nms_topk: tuple[int, int] = (1000, 1000),
        post_nms_topk: tuple[int, int] = (100, 100),
        nms_thresh: float = 0.6,
        thresh_with_ctr: bool = False,
        yield_proposals: bool = True,
    ):
        """
        Args:
            center_sample_radius: in units of the stride; <= 0 disables center sampling.
            score_thresh, pre_nms_topk, post_nms_topk: (train, test) values.
        """
        super().__init__()
        if len(in_features) != len(strides) or len(sizes_of_interest) != len(strides) - 1:
            raise ValueError("FCOS needs one stride per feature and len(strides) - 1 sizes of interest")
        self.in_features = list(in_features)
        self.fcos_head = fcos_head
        self.strides = list(strides)
        self.num_classes = num_classes
        self.sizes_of_interest = list(sizes_of_interest)
        self.center_sample_radius = center_sample_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loc_loss_type = loc_loss_type
        self.score_thresh = score_thresh
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.thresh_with_ctr = thresh_with_ctr
        self.yield_proposals = yield_proposals

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        c = cfg.MODEL.FCOS
        return {
            "in_features": c.IN_FEATURES,
            "fcos_head": FCOSHead(cfg, [input_shape[f] for f in c.IN_FEATURES]),
            "strides": c.FPN_STRIDES,
            "num_classes": c.NUM_CLASSES,
            "sizes_of_interest": c.SIZES_OF_INTEREST,
            "center_sample_radius": c.POS_RADIUS if c.CENTER_SAMPLE else 0.0,
            "focal_alpha": c.LOSS_ALPHA,
            "focal_gamma": c.LOSS_GAMMA,
            "loc_loss_type": c.LOC_LOSS_TYPE,
            "score_thresh": (c.INFERENCE_TH_TRAIN, c.INFERENCE_TH_TEST),
            "pre_nms_topk": (c.PRE_NMS_TOPK_TRAIN, c.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (c.POST_NMS_TOPK_TRAIN, c.POST_NMS_TOPK_TEST),
            "nms_thresh": c.NMS_TH,
            "thresh_with_ctr": c.THRESH_WITH_CTR,
            "yield_proposals": cfg.MODEL.MASK_ON,
        }

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        gt_instances: list[Instances] | None = None,
    ) -> tuple[list[Instances] | None, dict[str, Tensor]]:
        # the first place our code sees the normalised image of a GeneralizedRCNN (CenterMask)
        check_finite_images(images.tensor, "FCOS")
        feats = [features[f] for f in self.in_features]
        logits, regs, ctrs = self.fcos_head(feats)
        locations = compute_locations([f.shape[-2:] for f in feats], self.strides, feats[0].device)
        if self.training:
            assert gt_instances is not None, "FCOS training needs gt_instances"
            losses = self.losses(locations, logits, regs, ctrs, gt_instances)
            proposals = None
            if self.yield_proposals:
                proposals = self.predict(locations, logits, regs, ctrs, images.image_sizes, train=True)
            return proposals, losses
        # post-processing in float32 whatever the precision the head ran in (MODEL.INFERENCE.AMP)
        logits, regs, ctrs = ([x.float() for x in t] for t in (logits, regs, ctrs))
        return self.predict(locations, logits, regs, ctrs, images.image_sizes, train=False), {}

    @torch.no_grad()
    def targets(self, locations: list[Tensor], gt_instances: list[Instances]) -> tuple[Tensor, Tensor]:
        """Labels (N, L) and stride-normalised regression targets (N, L, 4) of the batch."""
        all_locations = torch.cat(locations)
        strides, size_ranges = per_location_stride_and_range(
            [len(loc) for loc in locations], self.strides, self.sizes_of_interest, all_locations.device
        )
        labels, reg_targets = [], []
        for gt in gt_instances:
            t = fcos_assign_targets(
                all_locations,
                strides,
                size_ranges,
                gt.gt_boxes.tensor,
                gt.gt_classes,
                background_label=self.num_classes,
                center_sample_radius=self.center_sample_radius,
            )
            labels.append(t.labels)
            reg_targets.append(t.reg_targets / strides[:, None])
        return torch.stack(labels), torch.stack(reg_targets)

    def losses(
        self,
        locations: list[Tensor],
        logits: list[Tensor],
        regs: list[Tensor],
        ctrs: list[Tensor],
        gt_instances: list[Instances],
    ) -> dict[str, Tensor]:
        labels, reg_targets = self.targets(locations, gt_instances)
        logits_flat = torch.cat(_flatten_levels(logits), dim=1).reshape(-1, self.num_classes)
        regs_flat = torch.cat(_flatten_levels(regs), dim=1).reshape(-1, 4)
        ctrs_flat = torch.cat(_flatten_levels(ctrs), dim=1).reshape(-1)
        labels = labels.reshape(-1)
        reg_targets = reg_targets.reshape(-1, 4)

        pos = torch.nonzero(labels != self.num_classes).squeeze(1)
        num_pos_avg = reduce_mean(pos.new_tensor(float(pos.numel()), dtype=torch.float32)).clamp(min=1.0)

        cls_targets = torch.zeros_like(logits_flat)
        cls_targets[pos, labels[pos]] = 1.0
        loss_cls = (
            sigmoid_focal_loss_jit(
                logits_flat, cls_targets, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )
            / num_pos_avg
        )

        ctr_targets = centerness_targets(reg_targets[pos])
        ctr_norm = reduce_mean(ctr_targets.sum().detach()).clamp(min=1e-6)
        loss_loc = (
            iou_loss(regs_flat[pos], reg_targets[pos], self.loc_loss_type, smooth=1.0, clamp_overlap=False)
            * ctr_targets
        ).sum() / ctr_norm
        loss_ctr = (
            F.binary_cross_entropy_with_logits(ctrs_flat[pos], ctr_targets, reduction="sum") / num_pos_avg
        )
        return {"loss_fcos_cls": loss_cls, "loss_fcos_loc": loss_loc, "loss_fcos_ctr": loss_ctr}

    @torch.no_grad()
    def predict(
        self,
        locations: list[Tensor],
        logits: list[Tensor],
        regs: list[Tensor],
        ctrs: list[Tensor],
        image_sizes: list[tuple[int, int]],
        train: bool,
    ) -> list[Instances]:
        """Per-image detections (spec 4.5) with the train or test thresholds; always detached."""
        i = 0 if train else 1
        logits_f = _flatten_levels(logits)
        regs_f = _flatten_levels(regs)
        ctrs_f = _flatten_levels(ctrs)
        results = []
        for img, image_size in enumerate(image_sizes):
            results.append(
                fcos_detections_single_image(
                    [x[img] for x in logits_f],
                    [x[img] for x in regs_f],
                    [x[img, :, 0] for x in ctrs_f],
                    locations,
                    self.strides,
                    image_size,
                    score_thresh=self.score_thresh[i],
                    pre_nms_topk=self.pre_nms_topk[i],
                    nms_thresh=self.nms_thresh,
                    post_nms_topk=self.post_nms_topk[i],
                    thresh_with_ctr=self.thresh_with_ctr,
                )
            )
        return results
