"""SipMask's FPN (P3-P7) over the shared deformable ResNet."""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from torch import nn

from onestage.backbone import InferenceCopyFPN, build_resnet_deform_backbone

__all__ = ["SipMaskFPN", "build_sipmask_resnet_fpn_backbone"]


class SipMaskFPN(InferenceCopyFPN):
    """Detectron2 FPN whose images only need padding to a multiple of 32 (not to P7's stride); inference
    runs its prepared copy (:class:`onestage.backbone.InferenceCopyFPN`)."""

    @property
    def size_divisibility(self) -> int:
        return 32


@BACKBONE_REGISTRY.register()
def build_sipmask_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet (caffe style, optional DCN interval) + FPN P3-P5, P6 from P5 and P7 from ReLU(P6)."""
    bottom_up = build_resnet_deform_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    backbone = SipMaskFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    # mmdet / benchmark FPN init: Xavier-uniform weights, zero bias.
    bottom_up_modules = set(bottom_up.modules())
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d) and m not in bottom_up_modules:
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return backbone
