"""SAG-Mask: the RoI mask head of CenterMask (conv tower + spatial attention + deconv)."""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, get_norm
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from onestage.inference import InferenceCopy, runs_inference_copy

__all__ = ["SpatialAttention", "SpatialAttentionMaskHead", "mask_inference", "mask_loss"]


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv([mean_c(x); max_c(x)]))`` (CenterMask's SAM; no residual)."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError("spatial attention kernel size must be 3 or 7")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        weight_init.c2_msra_fill(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        """(M, C, H, W) -> (M, C, H, W)."""
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


@ROI_MASK_HEAD_REGISTRY.register()
class SpatialAttentionMaskHead(nn.Module):
    """``mask_fcn1..N`` -> ``spatialAtt`` -> ``deconv`` (x2) -> ``predictor``: (M, K, 2R, 2R) logits.

    Unlike Detectron2's mask heads this module only predicts; :class:`CenterROIHeads` computes
    the loss because the MaskIoU head needs the logits and the mask targets too. Inference runs its
    prepared copy (channels-last weights, :mod:`onestage.inference`).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: list[int],
        conv_norm: str = "",
    ):
        """
        Args:
            conv_dims: widths of the 3x3 convs; the last one is also the deconv width.
            num_classes: K, or 1 for class-agnostic masks.
        """
        super().__init__()
        if len(conv_dims) < 1:
            raise ValueError("SpatialAttentionMaskHead needs at least one conv")
        in_ch = input_shape.channels
        self.conv_norm_relus = []
        for k, dim in enumerate(conv_dims):
            conv = Conv2d(
                in_ch,
                dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            in_ch = dim
        self.spatialAtt = SpatialAttention(3)
        self.deconv = ConvTranspose2d(in_ch, in_ch, kernel_size=2, stride=2, padding=0)
        self.predictor = Conv2d(in_ch, num_classes, kernel_size=1, stride=1, padding=0)

        for layer in [*self.conv_norm_relus, self.deconv]:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0.0)
        self.inference_copy: InferenceCopy | None = InferenceCopy(channels_last=False, winograd=True)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.ROI_MASK_HEAD
        return {
            "input_shape": input_shape,
            "num_classes": 1 if c.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": [c.CONV_DIM] * c.NUM_CONV,
            "conv_norm": c.NORM,
        }

    @runs_inference_copy
    def forward(self, x: Tensor) -> Tensor:
        """(M, C, R, R) pooled features -> (M, K, 2R, 2R) mask logits."""
        for layer in self.conv_norm_relus:
            x = layer(x)
        x = self.spatialAtt(x)
        x = F.relu(self.deconv(x))
        return self.predictor(x)


def _select_class(logits: Tensor, classes: Tensor) -> Tensor:
    """(M, K, H, W) logits, (M,) classes -> (M, H, W) logits of each RoI's class."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    return logits[torch.arange(logits.shape[0], device=logits.device), classes]


def mask_loss(pred_mask_logits: Tensor, instances: list[Instances]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean per-pixel BCE of each foreground RoI's gt-class mask logits (spec 5.4).

    Args:
        pred_mask_logits: (M, K, S, S) for the foreground proposals of all images.
        instances: per image, the foreground proposals with ``proposal_boxes``, ``gt_classes``,
            ``gt_masks``.

    Returns:
        loss (scalar), the gt-class logits (M, S, S) and the gt mask targets (M, S, S) bool.
    """
    side = pred_mask_logits.shape[2]
    gt_classes, gt_masks = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        gt_classes.append(inst.gt_classes.to(torch.int64))
        gt_masks.append(
            inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor.detach(), side).to(
                pred_mask_logits.device
            )
        )
    if not gt_masks:
        empty = pred_mask_logits.new_zeros((0, side, side))
        return pred_mask_logits.sum() * 0, empty, empty.bool()
    gt_classes_t = torch.cat(gt_classes)
    targets = torch.cat(gt_masks).bool()
    logits = _select_class(pred_mask_logits, gt_classes_t)

    pred_fg = logits > 0.0
    num_pixels = max(targets.numel(), 1)
    num_pos = max(int(targets.sum()), 1)
    num_neg = max(targets.numel() - int(targets.sum()), 1)
    storage = get_event_storage()
    storage.put_scalar("mask_rcnn/accuracy", 1.0 - float((pred_fg != targets).sum()) / num_pixels)
    storage.put_scalar("mask_rcnn/false_positive", float((pred_fg & ~targets).sum()) / num_neg)
    storage.put_scalar("mask_rcnn/false_negative", float((~pred_fg & targets).sum()) / num_pos)

    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="mean")
    return loss, logits, targets


def mask_inference(pred_mask_logits: Tensor, instances: list[Instances]) -> Tensor:
    """Set ``pred_masks`` (n, 1, S, S) = sigmoid of the predicted class's logits on each image.

    Returns:
        (M, 1, S, S) the masks of all images, concatenated.
    """
    classes = torch.cat([inst.pred_classes for inst in instances])
    probs = _select_class(pred_mask_logits, classes).sigmoid()[:, None]
    for inst, prob in zip(instances, probs.split([len(i) for i in instances]), strict=True):
        inst.pred_masks = prob
    return probs
