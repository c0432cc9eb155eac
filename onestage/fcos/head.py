"""FCOS head: classification / regression / centerness towers shared over the FPN levels."""

from __future__ import annotations

import math

import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

from onestage.inference import InferenceCopy, runs_inference_copy
from onestage.layers import Scale

__all__ = ["FCOSHead"]


def _tower(num_convs: int, channels: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        # The conv keeps its bias even with GroupNorm (key compatibility with centermask2).
        layers.append(nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=True))
        if norm == "GN":
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Towers + predictors of FCOS (centerness on the regression branch, ReLU'd distances).

    Module names follow centermask2's checkpoints: ``cls_tower``, ``bbox_tower``, ``share_tower``,
    ``cls_logits``, ``bbox_pred``, ``ctrness``, ``scales.{l}.scale``. Inference runs its prepared
    copy (channels-last weights, :mod:`onestage.inference`).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        prior_prob: float = 0.01,
        use_scale: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.share_tower = _tower(num_share_convs, in_channels, norm)
        self.cls_tower = _tower(num_cls_convs, in_channels, norm)
        self.bbox_tower = _tower(num_box_convs, in_channels, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, kernel_size=3, stride=1, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, kernel_size=3, stride=1, padding=1)
        self.scales = (
            nn.ModuleList([Scale(1.0, shape=(1,)) for _ in range(num_levels)]) if use_scale else None
        )

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.inference_copy: InferenceCopy | None = InferenceCopy(channels_last=False, winograd=True)

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"FCOS needs the same channel count on every level, got {channels}")
        if cfg.MODEL.FCOS.USE_DEFORMABLE:
            raise ValueError("MODEL.FCOS.USE_DEFORMABLE is not supported (no shipped config uses it)")
        return {
            "in_channels": channels.pop(),
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "num_levels": len(input_shape),
            "num_cls_convs": cfg.MODEL.FCOS.NUM_CLS_CONVS,
            "num_box_convs": cfg.MODEL.FCOS.NUM_BOX_CONVS,
            "num_share_convs": cfg.MODEL.FCOS.NUM_SHARE_CONVS,
            "norm": cfg.MODEL.FCOS.NORM,
            "prior_prob": cfg.MODEL.FCOS.PRIOR_PROB,
            "use_scale": cfg.MODEL.FCOS.USE_SCALE,
        }

    @runs_inference_copy
    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """
        Args:
            features: per level (N, C, H_l, W_l).

        Returns:
            logits: per level (N, K, H_l, W_l) class logits.
            reg: per level (N, 4, H_l, W_l) non-negative ``(l, t, r, b)`` in units of the stride.
            ctrness: per level (N, 1, H_l, W_l) centerness logits.
        """
        logits, regs, ctrs = [], [], []
        for level, feature in enumerate(features):
            t = self.share_tower(feature)
            logits.append(self.cls_logits(self.cls_tower(t)))
            box_t = self.bbox_tower(t)
            ctrs.append(self.ctrness(box_t))
            reg = self.bbox_pred(box_t)
            if self.scales is not None:
                reg = self.scales[level](reg)
            regs.append(F.relu(reg))
        return logits, regs, ctrs
