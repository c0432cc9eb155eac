"""MaskIoU head (mask scoring): predicts each RoI mask's IoU with its gt, per class."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Instances
from detectron2.utils.registry import Registry
from torch import Tensor, nn

from onestage.inference import InferenceCopy, runs_inference_copy

__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "MaskIoUHead",
    "build_maskiou_head",
    "gt_mask_fraction_in_boxes",
    "maskiou_inference",
    "maskiou_loss",
    "maskiou_targets",
]

ROI_MASKIOU_HEAD_REGISTRY = Registry("ROI_MASKIOU_HEAD")
ROI_MASKIOU_HEAD_REGISTRY.__doc__ = """
Registry for MaskIoU heads: called with ``obj(cfg, input_shape)`` where ``input_shape`` is the
ShapeSpec of the pooled RoI features (channels, pooler resolution).
"""


@ROI_MASKIOU_HEAD_REGISTRY.register()
class MaskIoUHead(nn.Module):
    """``pooling`` (max 2x2 of the mask) ++ RoI features -> ``maskiou_fcn1..N`` (last stride 2)
    -> ``maskiou_fc1`` -> ``maskiou_fc2`` -> ``maskiou``: (M, K) raw IoU predictions. Inference runs
    its prepared copy (channels-last weights, :mod:`onestage.inference`)."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        resolution: int,
        num_classes: int,
        conv_dims: list[int],
        fc_dim: int = 1024,
    ):
        """
        Args:
            in_channels: channels of the pooled RoI features (the mask adds one more).
            resolution: pooler resolution R; the mask input is (2R, 2R).
        """
        super().__init__()
        if len(conv_dims) < 1:
            raise ValueError("MaskIoUHead needs at least one conv")
        self.pooling = nn.MaxPool2d(kernel_size=2, stride=2)
        self.convs = []
        in_ch = in_channels + 1
        for k, dim in enumerate(conv_dims):
            stride = 2 if k == len(conv_dims) - 1 else 1
            conv = nn.Conv2d(in_ch, dim, kernel_size=3, stride=stride, padding=1)
            self.add_module(f"maskiou_fcn{k + 1}", conv)
            self.convs.append(conv)
            in_ch = dim
        out_res = (resolution + 1) // 2
        self.maskiou_fc1 = nn.Linear(in_ch * out_res * out_res, fc_dim)
        self.maskiou_fc2 = nn.Linear(fc_dim, fc_dim)
        self.maskiou = nn.Linear(fc_dim, num_classes)

        for layer in [*self.convs, self.maskiou_fc1, self.maskiou_fc2]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0.0)
        nn.init.normal_(self.maskiou.weight, mean=0.0, std=0.01)
        nn.init.constant_(self.maskiou.bias, 0.0)
        self.inference_copy: InferenceCopy | None = InferenceCopy(channels_last=False, winograd=True)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        # Built from the pooled feature channels, not ROI_MASK_HEAD.CONV_DIM (spec 12.2 item 7).
        c = cfg.MODEL.ROI_MASKIOU_HEAD
        return {
            "in_channels": input_shape.channels,
            "resolution": input_shape.height,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": [c.CONV_DIM] * c.NUM_CONV,
        }

    @runs_inference_copy
    def forward(self, features: Tensor, masks: Tensor) -> Tensor:
        """
        Args:
            features: (M, C, R, R) pooled RoI features.
            masks: (M, 1, 2R, 2R) soft masks in [0, 1].

        Returns:
            (M, K) predicted mask IoU per class.
        """
        x = torch.cat([features, self.pooling(masks)], dim=1)
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.maskiou_fc1(torch.flatten(x, 1)))
        x = F.relu(self.maskiou_fc2(x))
        return self.maskiou(x)


def build_maskiou_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    return ROI_MASKIOU_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASKIOU_HEAD.NAME)(cfg, input_shape)


def _polygon_fraction_in_box(polygons: list[np.ndarray], box: np.ndarray, full_area: float) -> float:
    x1, y1, x2, y2 = box
    # float32 differences then truncation, as centermask2 on its float32 boxes (float64 can differ
    # by one pixel, e.g. 100 - 1e-6 is 100.0 in float32)
    height = int(np.float32(y2) - np.float32(y1))
    width = int(np.float32(x2) - np.float32(x1))
    inside = 0.0
    if height > 0 and width > 0:
        shifted = []
        for poly in polygons:
            p = np.asarray(poly, dtype=np.float64).copy()
            p[0::2] -= x1
            p[1::2] -= y1
            shifted.append(p.tolist())
        inside = float(np.sum(mask_util.area(mask_util.frPyObjects(shifted, height, width))))
    return inside / full_area if full_area > 0 else 1.0


def _bitmask_fractions_in_boxes(masks: Tensor, boxes: Tensor) -> Tensor:
    """Same ratio for (M, H, W) bit masks: pixels whose centre lies in the ``int(h) x int(w)``
    canvas anchored at the box's top-left corner, over all mask pixels."""
    masks = masks.bool()
    x1, y1 = boxes[:, 0:1], boxes[:, 1:2]
    w = (boxes[:, 2:3] - x1).trunc()
    h = (boxes[:, 3:4] - y1).trunc()
    cx = torch.arange(masks.shape[2], device=masks.device, dtype=boxes.dtype) + 0.5
    cy = torch.arange(masks.shape[1], device=masks.device, dtype=boxes.dtype) + 0.5
    in_x = (cx[None] >= x1) & (cx[None] < x1 + w)  # (M, W)
    in_y = (cy[None] >= y1) & (cy[None] < y1 + h)  # (M, H)
    inside = (masks & in_y[:, :, None] & in_x[:, None, :]).sum(dim=(1, 2)).float()
    full = masks.sum(dim=(1, 2)).float()
    return torch.where(full > 0, inside / full.clamp(min=1.0), torch.ones_like(full))


def gt_mask_fraction_in_boxes(instances: list[Instances]) -> Tensor:
    """Fraction of each foreground RoI's gt mask area that lies inside its proposal box.

    Polygons (centermask2's only supported format) are shifted so the box's top-left corner is
    the origin, rasterised with pycocotools on an ``int(h) x int(w)`` canvas and their areas
    summed; the full area is the polygons' analytic area. Bit masks (``INPUT.MASK_FORMAT
    "bitmask"``, which crashes centermask2) count the mask pixels on the same canvas. Result
    clamped to ``[1e-10, 1]``; a gt with zero area gets 1.

    Returns:
        (M,) float32 over the concatenated ``instances`` (which need ``proposal_boxes``, ``gt_masks``).
    """
    ratios: list[Tensor] = []
    for inst in instances:
        if len(inst) == 0:
            continue
        boxes = inst.proposal_boxes.tensor.detach()
        if isinstance(inst.gt_masks, BitMasks):
            ratios.append(_bitmask_fractions_in_boxes(inst.gt_masks.tensor, boxes.float()).cpu())
            continue
        full_areas = inst.gt_masks.area().cpu().numpy().astype(np.float64)
        boxes_np = boxes.cpu().numpy().astype(np.float64)
        polygons = inst.gt_masks.polygons
        ratios.append(
            torch.tensor(
                [
                    _polygon_fraction_in_box(p, b, a)
                    for p, b, a in zip(polygons, boxes_np, full_areas, strict=True)
                ],
                dtype=torch.float32,
            )
        )
    if not ratios:
        return torch.zeros(0)
    return torch.cat(ratios).clamp(min=1e-10, max=1.0)


@torch.no_grad()
def maskiou_targets(instances: list[Instances], gt_class_logits: Tensor, gt_masks: Tensor) -> Tensor:
    """IoU between each RoI's binarised predicted mask and its *whole* gt mask (spec 5.6).

    The gt mask outside the box is accounted for by scaling the in-box gt pixel count by
    :func:`gt_mask_fraction_in_boxes`.

    Args:
        gt_class_logits: (M, S, S) mask logits of each RoI's gt class.
        gt_masks: (M, S, S) bool gt masks cropped to the proposal boxes.

    Returns:
        (M,) float32 targets in [0, 1].
    """
    ratio = gt_mask_fraction_in_boxes(instances).to(gt_class_logits.device)
    pred = gt_class_logits > 0
    full_area = gt_masks.sum(dim=(1, 2)).float() / ratio
    inter = (pred & gt_masks).sum(dim=(1, 2)).float()
    union = (pred.sum(dim=(1, 2)).float() + full_area - inter).clamp(min=1.0)
    return inter / union


def maskiou_loss(pred_maskiou: Tensor, gt_classes: Tensor, targets: Tensor) -> Tensor:
    """``sum 0.5 * (pred - target)^2 / #RoIs`` over RoIs with target > 0, at the gt class.

    Args:
        pred_maskiou: (M, K); gt_classes: (M,); targets: (M,).
    """
    valid = targets > 0
    if not bool(valid.any()):
        return pred_maskiou.sum() * 0
    pred = pred_maskiou[torch.arange(len(gt_classes), device=pred_maskiou.device), gt_classes]
    return 0.5 * ((pred[valid] - targets[valid]) ** 2).sum() / valid.sum()


def maskiou_inference(pred_maskiou: Tensor, instances: list[Instances]) -> None:
    """Set ``mask_scores = scores * maskiou[pred_class]`` on each image's instances (no clamping)."""
    classes = torch.cat([inst.pred_classes for inst in instances])
    ious = pred_maskiou[torch.arange(len(classes), device=pred_maskiou.device), classes]
    for inst, iou in zip(instances, ious.split([len(i) for i in instances]), strict=True):
        inst.mask_scores = inst.scores * iou
