"""Config keys read by the backbone builders of this package."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_backbone_config"]


def add_backbone_config(cfg: CN) -> None:
    """Add ``MODEL.VOVNET.*``, ``MODEL.MOBILENET`` and ``MODEL.FCOS.TOP_LEVELS`` (read by the
    ``build_fcos_*`` builders) to ``cfg`` in place, with centermask2's defaults. Existing values of
    these keys are reset to the defaults; other keys (including other ``MODEL.FCOS`` keys) are kept."""
    cfg.MODEL.MOBILENET = False  # build_fcos_resnet_fpn_backbone: MobileNetV2 bottom-up instead of ResNet

    cfg.MODEL.VOVNET = CN()
    cfg.MODEL.VOVNET.CONV_BODY = "V-39-eSE"
    cfg.MODEL.VOVNET.OUT_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    cfg.MODEL.VOVNET.NORM = "FrozenBN"
    # Unused by the builders; kept so that centermask2 YAML files that set them still load.
    cfg.MODEL.VOVNET.OUT_CHANNELS = 256
    cfg.MODEL.VOVNET.BACKBONE_OUT_CHANNELS = 256
    # Deformable 3x3 convs in the OSA modules of stages 2..5.
    cfg.MODEL.VOVNET.STAGE_WITH_DCN = (False, False, False, False)
    cfg.MODEL.VOVNET.WITH_MODULATED_DCN = False
    cfg.MODEL.VOVNET.DEFORMABLE_GROUPS = 1

    if "FCOS" not in cfg.MODEL:
        cfg.MODEL.FCOS = CN()
    # Extra FPN levels computed from P5: 2 -> P6, P7; 1 -> P6; 0 -> none.
    cfg.MODEL.FCOS.TOP_LEVELS = 2
