"""Backbones shared by the methods, registered in Detectron2's ``BACKBONE_REGISTRY``: VoVNetV2,
MobileNetV2, their FCOS FPN builders, and the ResNet with per-block deformable convs."""

from .fpn import (
    InferenceCopyFPN,
    LastLevelP6,
    build_fcos_mobilenetv2_fpn_backbone,
    build_fcos_resnet_fpn_backbone,
    build_fcos_top_block,
    build_fcos_vovnet_fpn_backbone,
)
from .mobilenet import MobileNetV2, build_mnv2_backbone
from .resnet import DeformBottleneckBlock, build_resnet_deform_backbone, deform_block_flags
from .vovnet import VOVNET_SPECS, VoVNet, build_vovnet_backbone

__all__ = [
    "DeformBottleneckBlock",
    "InferenceCopyFPN",
    "LastLevelP6",
    "MobileNetV2",
    "VOVNET_SPECS",
    "VoVNet",
    "build_fcos_mobilenetv2_fpn_backbone",
    "build_fcos_resnet_fpn_backbone",
    "build_fcos_top_block",
    "build_fcos_vovnet_fpn_backbone",
    "build_mnv2_backbone",
    "build_resnet_deform_backbone",
    "build_vovnet_backbone",
    "deform_block_flags",
]
