"""FCOS FPN backbones: Detectron2's ``FPN`` over VoVNet / MobileNetV2 / ResNet bottom-ups, with P6 (and
P7) computed from P5 as FCOS uses them (``MODEL.FCOS.TOP_LEVELS``)."""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from torch import nn

from onestage.inference import InferenceCopy, is_fpn_output_conv, runs_inference_copy

from .mobilenet import build_mnv2_backbone
from .vovnet import build_vovnet_backbone

__all__ = [
    "InferenceCopyFPN",
    "LastLevelP6",
    "build_fcos_top_block",
    "build_fcos_vovnet_fpn_backbone",
    "build_fcos_mobilenetv2_fpn_backbone",
    "build_fcos_resnet_fpn_backbone",
]


class InferenceCopyFPN(FPN):
    """Detectron2's ``FPN`` (same modules, keys and training) that runs inference on its prepared copy
    (:class:`onestage.inference.InferenceCopy`: frozen norms folded into the convs, channels-last
    bottom-up, Winograd 3x3 output convs)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inference_copy: InferenceCopy | None = InferenceCopy(winograd=is_fpn_output_conv)

    @runs_inference_copy
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return super().forward(x)


class LastLevelP6(nn.Module):
    """P6 = 3x3 stride-2 conv on ``in_feature`` (``top_block.p6``), for ``TOP_LEVELS`` 1."""

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5"):
        super().__init__()
        self.num_levels = 1
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.p6(x)]


def build_fcos_top_block(cfg: CfgNode) -> nn.Module | None:
    """Extra levels from P5 (``MODEL.FPN.OUT_CHANNELS`` wide): ``MODEL.FCOS.TOP_LEVELS`` 2 -> P6, P7;
    1 -> P6; 0 -> none."""
    top_levels = cfg.MODEL.FCOS.TOP_LEVELS
    channels = cfg.MODEL.FPN.OUT_CHANNELS
    if top_levels == 2:
        return LastLevelP6P7(channels, channels, in_feature="p5")
    if top_levels == 1:
        return LastLevelP6(channels, channels, in_feature="p5")
    if top_levels == 0:
        return None
    raise ValueError(f"MODEL.FCOS.TOP_LEVELS must be 0, 1 or 2, got {top_levels}")


def _fpn(cfg: CfgNode, bottom_up: Backbone, top_block: nn.Module | None) -> FPN:
    return InferenceCopyFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_fcos_vovnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """VoVNet + FPN + P6/P7 from P5 (all CenterMask VoVNet configs)."""
    return _fpn(cfg, build_vovnet_backbone(cfg, input_shape), build_fcos_top_block(cfg))


@BACKBONE_REGISTRY.register()
def build_fcos_mobilenetv2_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """MobileNetV2 + FPN + P6/P7 from P5 (CenterMask-Lite-Mv2)."""
    return _fpn(cfg, build_mnv2_backbone(cfg, input_shape), build_fcos_top_block(cfg))


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """Detectron2's ResNet + FPN + P6/P7 from P5 (CenterMask R-50 / R-101 / X-101)."""
    return _fpn(cfg, build_resnet_backbone(cfg, input_shape), build_fcos_top_block(cfg))
