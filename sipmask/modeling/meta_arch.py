"""SipMask meta-architecture: a dense one-stage instance segmenter (Cao et al., ECCV 2020)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector, permute_to_N_HWA_K
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor

from onestage.fcos import (
    centerness_targets,
    compute_locations,
    fcos_assign_targets,
    per_location_stride_and_range,
    select_fcos_detections,
)
from onestage.inference import check_amp, inference_autocast
from onestage.inputs import normalize_images
from onestage.layers import (
    distance_to_boxes,
    fast_nms,
    multiclass_nms,
    paste_windows,
    plus_one_boxes,
    reduce_mean,
    upsample_windows_into,
    window_chunks,
)

from .crop_split import box_pixel_windows, crop_split, crop_split_windows
from .head import SipMaskHead
from .losses import (
    giou_loss_benchmark,
    iou_loss_plus1,
    mask_alignment_loss,
    rescoring_loss,
    rescoring_targets,
)

__all__ = ["SipMask", "gt_masks_on_grid", "pre_nms_topk_locations"]

_MASK_CHUNK = 16  # reference path: masks upsampled to the output size at a time (bounds memory)


def gt_masks_on_grid(instances: Instances, canvas_hw: tuple[int, int]) -> Tensor:
    """Instance masks on the stride-2 mask grid (spec §2.6).

    The masks (image-sized polygons or bitmasks) are placed top-left on the padded canvas, 2x2
    averaged and thresholded at > 0.5 (3 of 4 pixels foreground).

    Returns:
        (G, H_pad / 2, W_pad / 2) float 0/1.
    """
    h, w = instances.image_size
    pad_h, pad_w = canvas_hw
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, h, w)
    if not isinstance(masks, BitMasks):
        raise TypeError(f"gt_masks must be PolygonMasks or BitMasks, got {type(masks).__name__}")
    t = masks.tensor.float()[:, :pad_h, :pad_w]
    t = F.pad(t, (0, pad_w - t.shape[2], 0, pad_h - t.shape[1]))
    if t.shape[0] == 0:
        return t.new_zeros((0, pad_h // 2, pad_w // 2))
    return (F.avg_pool2d(t[:, None], 2)[:, 0] > 0.5).float()


def pre_nms_topk_locations(cls_probs: Tensor, ctr_probs: Tensor, k: int) -> Tensor:
    """mmdet per-level pre-NMS selection: the indices of the ``k`` locations with the largest
    ``max_c(cls_c * ctr)`` (all locations, in order, when there are at most ``k``)."""
    num = cls_probs.shape[0]
    if num <= k:
        return torch.arange(num, device=cls_probs.device)
    return (cls_probs * ctr_probs[:, None]).amax(dim=1).topk(k).indices


def _resize_instances(inst: Instances, new_hw: tuple[int, int]) -> Instances:
    """Rescale gt boxes and masks of ``inst`` to an image resized to ``new_hw`` (aspect ignored)."""
    h, w = inst.image_size
    sy, sx = new_hw[0] / h, new_hw[1] / w
    out = Instances(new_hw)
    for name, value in inst.get_fields().items():
        if name == "gt_boxes":
            value = Boxes(value.tensor * value.tensor.new_tensor([sx, sy, sx, sy]))
        elif name == "gt_masks" and isinstance(value, PolygonMasks):
            scale = np.array([sx, sy])
            value = PolygonMasks(
                [[(p.reshape(-1, 2) * scale).reshape(-1) for p in obj] for obj in value.polygons]
            )
        elif name == "gt_masks" and isinstance(value, BitMasks):
            t = value.tensor.float()[:, None]
            t = F.interpolate(t, size=new_hw, mode="nearest") if t.shape[0] else t.new_zeros((0, 1, *new_hw))
            value = BitMasks(t[:, 0] > 0.5)
        out.set(name, value)
    return out


@META_ARCH_REGISTRY.register()
class SipMask(DenseDetector):
    """SipMask / SipMask++ (image). Training returns ``loss_cls, loss_bbox, loss_centerness,
    loss_mask`` (+ ``loss_iou`` with re-scoring); inference returns ``Instances`` at the requested
    output size with ``pred_boxes, scores, pred_classes, pred_masks`` (+ ``mask_scores``). Inference
    runs the network under ``MODEL.INFERENCE.AMP`` and post-processes in float32."""

    @configurable
    def __init__(
        self,
        *,
        backbone,
        head: SipMaskHead,
        head_in_features: list[str],
        pixel_mean,
        pixel_std,
        num_classes: int,
        strides: list[int],
        sizes_of_interest: list[float],
        center_sample_radius: float = 1.5,
        box_plus_one: bool = True,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "iou_plus1_stride_units",
        cls_norm: str = "pos_plus_imgs",
        ctr_loss_reduction: str = "mean",
        mask_loss_variant: str = "mmdet",
        inference_mode: str = "mmdet_nms",
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        pre_nms_topk: int = 1000,
        fast_nms_topk: int = 200,
        max_dets: int = 100,
        mask_thresh: float = 0.4,
        fixed_size_train: tuple[int, int] | None = None,
        fixed_size_test: tuple[int, int] | None = None,
        inference_amp: str = "",
    ):
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.inference_amp = check_amp(inference_amp, self.device)
        checks = {
            "BOX_LOSS": (box_loss, ("iou_plus1_stride_units", "iou_plus1_pixels", "giou_benchmark")),
            "CLS_NORM": (cls_norm, ("pos_plus_imgs", "pos_allreduce")),
            "CTR_LOSS_REDUCTION": (ctr_loss_reduction, ("mean", "sum_over_pos")),
            "MASK_LOSS_VARIANT": (mask_loss_variant, ("mmdet", "benchmark")),
            "INFERENCE_MODE": (inference_mode, ("mmdet_nms", "fast_nms", "benchmark")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"MODEL.SIPMASK.{key} must be one of {allowed}, got {value!r}")
        if len(strides) != len(head_in_features):
            raise ValueError("FPN_STRIDES and IN_FEATURES must have the same length")
        self.num_classes = num_classes
        self.strides = list(strides)
        self.sizes_of_interest = list(sizes_of_interest)
        self.center_sample_radius = center_sample_radius
        self.box_plus_one = box_plus_one
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_loss = box_loss
        self.cls_norm = cls_norm
        self.ctr_loss_reduction = ctr_loss_reduction
        self.mask_loss_variant = mask_loss_variant
        self.inference_mode = inference_mode
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.fast_nms_topk = fast_nms_topk
        self.max_dets = max_dets
        self.mask_thresh = mask_thresh
        self.fixed_size_train = tuple(fixed_size_train) if fixed_size_train else None
        self.fixed_size_test = tuple(fixed_size_test) if fixed_size_test else None
        for size in (self.fixed_size_train, self.fixed_size_test):
            if size is not None and (len(size) != 2 or size[0] % 32 or size[1] % 32):
                raise ValueError(f"fixed input sizes must be (H, W) multiples of 32, got {size}")

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.SIPMASK
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in c.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(f"backbone has no features {missing}; it outputs {sorted(shapes)}")
        head = cls.build_head(cfg, [shapes[f] for f in c.IN_FEATURES])
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(c.IN_FEATURES),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_classes": c.NUM_CLASSES,
            "strides": list(c.FPN_STRIDES),
            "sizes_of_interest": list(c.SIZES_OF_INTEREST),
            "center_sample_radius": c.CENTER_SAMPLE_RADIUS,
            "box_plus_one": c.BOX_PLUS_ONE,
            "focal_alpha": c.FOCAL_LOSS_ALPHA,
            "focal_gamma": c.FOCAL_LOSS_GAMMA,
            "box_loss": c.BOX_LOSS,
            "cls_norm": c.CLS_NORM,
            "ctr_loss_reduction": c.CTR_LOSS_REDUCTION,
            "mask_loss_variant": c.MASK_LOSS_VARIANT,
            "inference_mode": c.INFERENCE_MODE,
            "score_thresh": c.SCORE_THRESH_TEST,
            "nms_thresh": c.NMS_THRESH_TEST,
            "pre_nms_topk": c.PRE_NMS_TOPK_TEST,
            "fast_nms_topk": c.FAST_NMS_TOPK,
            "max_dets": c.DETECTIONS_PER_IMAGE,
            "mask_thresh": c.MASK_THRESH,
            "fixed_size_train": c.FIXED_INPUT_SIZE_TRAIN or None,
            "fixed_size_test": c.FIXED_INPUT_SIZE_TEST or None,
            "inference_amp": cfg.MODEL.INFERENCE.AMP,
        }

    @classmethod
    def build_head(cls, cfg, input_shape: list[ShapeSpec]) -> SipMaskHead:
        return SipMaskHead(cfg, input_shape)

    # ------------------------------------------------------------------ input
    def preprocess_image(self, batched_inputs: list[dict[str, Tensor]]) -> ImageList:
        """Normalise, optionally resize to the fixed (H, W) input ignoring the aspect ratio
        (bilinear), pad to a multiple of 32 and batch."""
        fixed = self.fixed_size_train if self.training else self.fixed_size_test
        images = [x["image"] for x in batched_inputs]
        return normalize_images(
            images, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility, fixed, "SipMask"
        )

    def forward(self, batched_inputs: list[dict[str, Tensor]]):
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            with inference_autocast(self.inference_amp, self.device):
                features = self.backbone(images.tensor)
                preds = self.head([features[f] for f in self.head_in_features])
            return self.inference(images, preds, batched_inputs)
        features = self.backbone(images.tensor)
        preds = self.head([features[f] for f in self.head_in_features])
        if "instances" not in batched_inputs[0]:
            raise ValueError("SipMask training needs 'instances' in every input")
        gt_instances = self.prepare_gt_instances([x["instances"] for x in batched_inputs], images)
        return self.losses(images, preds, gt_instances)

    def prepare_gt_instances(self, instances: list[Instances], images: ImageList) -> list[Instances]:
        """Ground truth on this device, rescaled to the network input where the model resized it."""
        gt_instances = []
        for inst, hw in zip(instances, images.image_sizes):
            inst = inst.to(self.device)
            if not inst.has("gt_masks"):
                raise ValueError("SipMask training needs gt_masks (MODEL.MASK_ON: True)")
            if tuple(inst.image_size) != tuple(hw):
                inst = _resize_instances(inst, tuple(hw))
            gt_instances.append(inst)
        return gt_instances

    # ------------------------------------------------------------------ training
    def _flatten(self, preds: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cls = torch.cat([permute_to_N_HWA_K(x, self.num_classes) for x in preds["cls_logits"]], dim=1)
        reg = torch.cat([permute_to_N_HWA_K(x, 4) for x in preds["bbox_reg"]], dim=1)
        ctr = torch.cat([permute_to_N_HWA_K(x, 1) for x in preds["centerness"]], dim=1)[..., 0]
        k4 = preds["coeffs"][0].shape[1]
        coef = torch.cat([permute_to_N_HWA_K(x, k4) for x in preds["coeffs"]], dim=1)
        return cls, reg, ctr, coef

    def _locations(self, preds: dict) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        shapes = [tuple(x.shape[-2:]) for x in preds["cls_logits"]]
        device = preds["cls_logits"][0].device
        locations = torch.cat(compute_locations(shapes, self.strides, device))
        counts = [h * w for h, w in shapes]
        strides, ranges = per_location_stride_and_range(counts, self.strides, self.sizes_of_interest, device)
        return locations, strides, ranges, counts

    def _gt_boxes(self, inst: Instances) -> Tensor:
        boxes = inst.gt_boxes.tensor
        if self.box_plus_one:  # continuous [x, x + w] -> inclusive [x, x + w - 1]
            boxes = boxes - boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
        return boxes

    def losses(
        self,
        images: ImageList,
        preds: dict,
        gt_instances: list[Instances],
        positives_out: list[tuple[Tensor, Tensor, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """The image losses. If ``positives_out`` is a list, it receives per image the positives
        that passed the mask loss's area filter: (location indices (P,), their detached predicted
        boxes in input pixels (P, 4), their gt indices (P,))."""
        cls, reg, ctr, coef = self._flatten(preds)
        locations, strides, ranges, _ = self._locations(preds)
        basis = preds["basis"]
        canvas = tuple(images.tensor.shape[-2:])
        num_imgs = len(gt_instances)

        labels, reg_targets, matched, gt_boxes, gt_grid = [], [], [], [], []
        for inst in gt_instances:
            if len(inst) and (
                int(inst.gt_classes.max()) >= self.num_classes or int(inst.gt_classes.min()) < 0
            ):
                raise ValueError(
                    f"gt class ids must lie in [0, {self.num_classes}) (MODEL.SIPMASK.NUM_CLASSES), "
                    f"got {inst.gt_classes.tolist()}"
                )
            boxes = self._gt_boxes(inst)
            t = fcos_assign_targets(
                locations,
                strides,
                ranges,
                boxes,
                inst.gt_classes,
                background_label=self.num_classes,
                center_sample_radius=self.center_sample_radius,
                area_plus_one=self.box_plus_one,
            )
            labels.append(t.labels)
            reg_targets.append(t.reg_targets)
            matched.append(t.matched_idxs)
            gt_boxes.append(boxes)
            gt_grid.append(gt_masks_on_grid(inst, canvas))
        labels_t = torch.stack(labels)  # (N, L)
        reg_t = torch.stack(reg_targets)  # (N, L, 4) pixels
        pos = labels_t < self.num_classes
        num_pos = int(pos.sum())

        # every rank takes part in the same all-reduces, whatever its number of positives
        num_pos_avg = max(_all_reduce_mean(float(num_pos), cls.device), 1.0)

        # classification
        onehot = F.one_hot(labels_t, self.num_classes + 1)[..., : self.num_classes].float()
        cls = cls.float()
        loss_cls = sigmoid_focal_loss(
            cls, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )
        if self.cls_norm == "pos_plus_imgs":
            loss_cls = loss_cls / (num_pos + num_imgs)
        else:
            loss_cls = loss_cls / num_pos_avg

        # box regression and centerness, over positives
        pos_reg = reg[pos]
        ctr_t = centerness_targets(reg_t[pos])
        pos_tgt = (reg_t / strides[:, None])[pos]  # stride units
        pos_ctr = ctr[pos].float()
        if self.box_loss == "iou_plus1_stride_units":
            loss_bbox = iou_loss_plus1(pos_reg, pos_tgt, ctr_t)
        elif self.box_loss == "iou_plus1_pixels":  # SipMask-VIS: distances in input pixels
            loss_bbox = iou_loss_plus1((reg * strides[:, None])[pos], reg_t[pos], ctr_t)
        else:
            denom = max(_all_reduce_mean(float(ctr_t.sum()), cls.device), 1e-6)
            loss_bbox = giou_loss_benchmark(pos_reg, pos_tgt, ctr_t) / denom
        if num_pos == 0:
            loss_ctr = pos_ctr.sum() * 0
        elif self.ctr_loss_reduction == "mean":
            loss_ctr = F.binary_cross_entropy_with_logits(pos_ctr, ctr_t, reduction="mean")
        else:
            loss_ctr = F.binary_cross_entropy_with_logits(pos_ctr, ctr_t, reduction="sum") / num_pos_avg

        # masks; the zero keeps the mask branch in the graph when no image has a positive (DDP)
        loss_mask = (basis.sum() + coef.sum()) * 0
        iou_preds, iou_tgts, iou_ws = [], [], []
        for i in range(num_imgs):
            p = torch.nonzero(pos[i]).squeeze(1)
            if p.numel() == 0:
                if positives_out is not None:
                    positives_out.append((p, reg.new_zeros((0, 4)), p))
                continue
            d = reg[i, p].detach() * strides[p, None]
            pred_boxes = distance_to_boxes(locations[p], d) / 2
            gt_idx = matched[i][p]
            cls_probs = torch.sigmoid(cls[i, p, labels_t[i, p]]).detach()
            loss_i, kept_masks, keep = mask_alignment_loss(
                basis[i],
                coef[i, p],
                pred_boxes,
                gt_boxes[i][gt_idx] / 2,
                gt_grid[i][gt_idx],
                cls_probs,
                plus_one=self.box_plus_one,
                variant=self.mask_loss_variant,
            )
            loss_mask = loss_mask + loss_i
            if positives_out is not None:
                positives_out.append((p[keep], pred_boxes[keep] * 2, gt_idx[keep]))
            if self.head.rescoring and keep.numel():
                scores = self.head.rescore(kept_masks.detach())
                iou_preds.append(scores[torch.arange(keep.numel()), labels_t[i, p[keep]]])
                tgt, wgt = rescoring_targets(kept_masks.detach(), gt_grid[i][gt_idx[keep]])
                iou_tgts.append(tgt)
                iou_ws.append(wgt)
        loss_mask = loss_mask / num_imgs
        if self.mask_loss_variant == "benchmark" and float(loss_mask.detach()) > 1.0:
            loss_mask = loss_mask * 0.5

        losses = {
            "loss_cls": loss_cls,
            "loss_bbox": loss_bbox,
            "loss_centerness": loss_ctr,
            "loss_mask": loss_mask,
        }
        if self.head.rescoring:
            if iou_preds:
                losses["loss_iou"] = rescoring_loss(
                    torch.cat(iou_preds), torch.cat(iou_tgts), torch.cat(iou_ws)
                )
            else:  # keep the re-scoring parameters in the graph (DDP)
                params = itertools.chain(
                    self.head.convs_scoring.parameters(), self.head.mask_scoring.parameters()
                )
                losses["loss_iou"] = sum(p.sum() for p in params) * 0
        return losses

    # ------------------------------------------------------------------ inference
    def inference(self, images: ImageList, preds: dict, batched_inputs: list[dict]) -> list[dict]:
        results = []
        locations, strides, _, counts = self._locations(preds)
        # float32 whatever the precision the network ran in (MODEL.INFERENCE.AMP)
        cls, reg, ctr, coef = (x.float() for x in self._flatten(preds))
        for i, (h, w) in enumerate(images.image_sizes):
            out_h = batched_inputs[i].get("height", h)
            out_w = batched_inputs[i].get("width", w)
            inst = self.inference_single(
                cls[i].sigmoid(),
                ctr[i].sigmoid(),
                reg[i] * strides[:, None],
                coef[i],
                preds["basis"][i],
                locations,
                counts,
                (h, w),
                (int(out_h), int(out_w)),
            )
            results.append({"instances": inst})
        return results

    def inference_single(
        self,
        cls_probs: Tensor,
        ctr_probs: Tensor,
        distances: Tensor,
        coeffs: Tensor,
        basis: Tensor,
        locations: Tensor,
        counts: list[int],
        input_hw: tuple[int, int],
        output_hw: tuple[int, int],
    ) -> Instances:
        """Detections and masks of one image.

        Args:
            cls_probs: (L, C); ctr_probs: (L,); distances: (L, 4) pixels; coeffs: (L, 4K);
            basis: (K, H_m, W_m); locations: (L, 2); counts: locations per level;
            input_hw: the network input size (unpadded); output_hw: the size to return results at.
        """
        h, w = input_hw
        if self.inference_mode == "benchmark":
            boxes = self._clipped_boxes(locations, distances, input_hw)
            rows, classes, scores = select_fcos_detections(
                list(boxes.split(counts)),
                list(cls_probs.split(counts)),
                list(ctr_probs.split(counts)),
                self.score_thresh,
                self.pre_nms_topk,
                self.nms_thresh,
                self.max_dets,
                plus_one=self.box_plus_one,
            )
            boxes = boxes[rows]
        else:
            starts = itertools.accumulate([0, *counts[:-1]])
            cand = torch.cat(
                [
                    pre_nms_topk_locations(c, t, self.pre_nms_topk) + start
                    for c, t, start in zip(cls_probs.split(counts), ctr_probs.split(counts), starts)
                ]
            )
            boxes = self._clipped_boxes(locations[cand], distances[cand], input_hw)
            if self.inference_mode == "mmdet_nms":
                r, classes, scores = multiclass_nms(
                    boxes,
                    cls_probs[cand],
                    ctr_probs[cand],
                    self.score_thresh,
                    self.nms_thresh,
                    self.max_dets,
                    self.box_plus_one,
                )
            else:
                r, classes, scores = fast_nms(
                    boxes,
                    cls_probs[cand] * ctr_probs[cand, None],
                    self.score_thresh,
                    self.nms_thresh,
                    self.fast_nms_topk,
                    self.max_dets,
                )
            rows, boxes = cand[r], boxes[r]

        # masks (§3.3): crop-split on the mask grid, [re-score], upsample, threshold, paste
        out_h, out_w = output_hw
        sy, sx = h / out_h, w / out_w
        result = Instances(output_hw)
        result.pred_masks, soft = self._masks(
            basis.float(), coeffs[rows].float(), boxes / 2, (sy, sx), output_hw
        )
        if self.head.rescoring:
            ious = self.head.rescore(soft).float()
            result.mask_scores = ious[torch.arange(rows.numel(), device=ious.device), classes] * scores
        # inclusive x2 -> Detectron2's continuous x2 (COCO w = x2 - x1 + 1)
        out_boxes = plus_one_boxes(boxes / boxes.new_tensor([sx, sy, sx, sy]), self.box_plus_one)
        result.pred_boxes = Boxes(out_boxes)
        result.scores = scores
        result.pred_classes = classes
        return result

    def _clipped_boxes(self, locations: Tensor, distances: Tensor, input_hw: tuple[int, int]) -> Tensor:
        """Decoded boxes clipped to the input (x2 <= w - 1, y2 <= h - 1 with BOX_PLUS_ONE)."""
        h, w = input_hw
        e = 1.0 if self.box_plus_one else 0.0
        max_xy = torch.tensor([w - e, h - e, w - e, h - e], device=locations.device)
        return distance_to_boxes(locations, distances).clamp(min=0).minimum(max_xy)

    def _masks(
        self,
        basis: Tensor,
        coeffs: Tensor,
        grid_boxes: Tensor,
        scale: tuple[float, float],
        output_hw: tuple[int, int],
    ) -> tuple[Tensor, Tensor | None]:
        """Crop-split soft masks on the (K, H_m, W_m) mask grid, upsampled by ``2 / scale`` (explicit
        floor size, bilinear), thresholded and pasted top-left into an ``output_hw`` canvas.

        Without autograd (inference) only each box's pixels are computed (:func:`crop_split_windows`,
        :func:`upsample_windows_into`), in chunks of similar box sizes; with autograd on, the whole grid
        and canvas, as the authors do (the same values up to float rounding). Returns the (N, H, W) bool
        masks and, for re-scoring, the (N, H_m, W_m) soft masks (None without re-scoring).
        """
        k, hm, wm = basis.shape
        n = coeffs.shape[0]
        up_h = max(int(math.floor(hm * 2 / scale[0])), 1)
        up_w = max(int(math.floor(wm * 2 / scale[1])), 1)
        if torch.is_grad_enabled():
            soft = crop_split(basis, coeffs, grid_boxes)
            return self._paste_full_canvas(soft, (up_h, up_w), output_hw), soft
        masks = torch.zeros((n, *output_hw), dtype=torch.bool, device=basis.device)
        soft = basis.new_zeros((n, hm, wm)) if self.head.rescoring else None
        windows = box_pixel_windows(grid_boxes, hm, wm)
        areas = (windows[:, 2] - windows[:, 0]).clamp(min=0) * (windows[:, 3] - windows[:, 1]).clamp(min=0)
        for idx in window_chunks(areas * k):
            crops = crop_split_windows(basis, coeffs[idx], grid_boxes[idx], windows[idx])
            if soft is not None:
                paste_windows(soft, idx, crops, windows[idx])
            upsample_windows_into(masks, idx, crops, windows[idx], (hm, wm), (up_h, up_w), self.mask_thresh)
        return masks, soft

    def _paste_full_canvas(self, soft: Tensor, size: tuple[int, int], output_hw: tuple[int, int]) -> Tensor:
        """Upsample the whole (N, H_m, W_m) soft masks to ``size`` (bilinear), threshold and paste
        top-left into an ``output_hw`` canvas. Returns (N, H, W) bool."""
        out = torch.zeros((soft.shape[0], *output_hw), dtype=torch.bool, device=soft.device)
        ch, cw = min(size[0], output_hw[0]), min(size[1], output_hw[1])
        for start in range(0, soft.shape[0], _MASK_CHUNK):
            chunk = soft[start : start + _MASK_CHUNK, None]
            up = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)[:, 0]
            out[start : start + _MASK_CHUNK, :ch, :cw] = up[:, :ch, :cw] > self.mask_thresh
        return out


def _all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of the float ``value`` over all processes."""
    return float(reduce_mean(torch.tensor(value, device=device)))
