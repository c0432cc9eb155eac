from .config import add_backbone_config
from .fpn import (
    LastLevelP6,
    build_fcos_mobilenetv2_fpn_backbone,
    build_fcos_resnet_fpn_backbone,
    build_fcos_top_block,
    build_fcos_vovnet_fpn_backbone,
    build_mobilenetv2_fpn_backbone,
    build_vovnet_fpn_backbone,
)
from .mobilenet import MobileNetV2, build_mnv2_backbone
from .vovnet import VOVNET_SPECS, VoVNet, build_vovnet_backbone

__all__ = [
    "add_backbone_config",
    "LastLevelP6",
    "MobileNetV2",
    "VoVNet",
    "VOVNET_SPECS",
    "build_fcos_mobilenetv2_fpn_backbone",
    "build_fcos_resnet_fpn_backbone",
    "build_fcos_top_block",
    "build_fcos_vovnet_fpn_backbone",
    "build_mnv2_backbone",
    "build_mobilenetv2_fpn_backbone",
    "build_vovnet_backbone",
    "build_vovnet_fpn_backbone",
]
