"""Caffe-style ResNet with a deformable conv on every k-th block, and the SipMask FPN (P3-P7).

Detectron2's ``build_resnet_backbone`` puts deformable convs on *every* block of a stage and needs the
compiled Detectron2 extension; SipMask++ has them on blocks 0, 3, 6, ... of res3-res5 (spec §1.1), so
stages are built here block by block, with the project's torchvision-based :class:`DeformConv`.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock
from torch import nn

from centermask.layers import DeformConv

__all__ = [
    "DeformBottleneckBlock",
    "SipMaskFPN",
    "build_sipmask_resnet_backbone",
    "build_sipmask_resnet_fpn_backbone",
    "deform_block_flags",
]


class DeformBottleneckBlock(CNNBlockBase):
    """Bottleneck whose 3x3 ``conv2`` is a deformable conv v1 with offsets from ``conv2_offset``.

    Parameter names are those of Detectron2's ``DeformBottleneckBlock`` (``conv2_offset``,
    ``conv2.norm``), so checkpoints map one to one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels, out_channels, 1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
            )
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            2 * 9 * deform_num_groups,
            3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = DeformConv(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in [self.conv1, self.conv3, self.shortcut]:
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        nn.init.kaiming_normal_(self.conv2.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out, self.conv2_offset(out)))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


def deform_block_flags(num_blocks: int, interval: int) -> list[bool]:
    """Which blocks of a deformable stage get the deformable conv: 0, interval, 2*interval, ..."""
    return [b % interval == 0 for b in range(num_blocks)]


_BLOCKS_PER_DEPTH = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


@BACKBONE_REGISTRY.register()
def build_sipmask_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet from ``MODEL.RESNETS`` with a per-block deformable-conv interval.

    Unlike Detectron2's builder, any ``RES2_OUT_CHANNELS`` is accepted for depth 18/34 (small
    synthetic-data models).
    """
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    stem = BasicStem(
        in_channels=input_shape.channels, out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, norm=norm
    )
    depth = r.DEPTH
    num_blocks_per_stage = _BLOCKS_PER_DEPTH[depth]
    out_stage_idx = [{"res2": 2, "res3": 3, "res4": 4, "res5": 5}[f] for f in r.OUT_FEATURES]
    max_stage_idx = max(out_stage_idx)
    in_channels = cfg.MODEL.RESNETS.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    interval = max(int(r.DEFORM_INTERVAL), 1)
    if r.RES5_DILATION != 1:
        raise ValueError("SipMask backbones use RES5_DILATION = 1")
    stages = []
    for idx in range(max_stage_idx - 1):
        n = num_blocks_per_stage[idx]
        first_stride = 1 if idx == 0 else 2
        deform_flags = deform_block_flags(n, interval) if r.DEFORM_ON_PER_STAGE[idx] else [False] * n
        blocks = []
        for b in range(n):
            stride = first_stride if b == 0 else 1
            if depth in (18, 34):
                if deform_flags[b]:
                    raise ValueError("deformable convs need a bottleneck ResNet (depth >= 50)")
                block = BasicBlock(in_channels, out_channels, stride=stride, norm=norm)
            elif deform_flags[b]:
                if r.DEFORM_MODULATED:
                    raise ValueError("SipMask++ uses deformable conv v1 (DEFORM_MODULATED = False)")
                block = DeformBottleneckBlock(
                    in_channels,
                    out_channels,
                    bottleneck_channels=bottleneck_channels,
                    stride=stride,
                    norm=norm,
                    stride_in_1x1=r.STRIDE_IN_1X1,
                    deform_num_groups=r.DEFORM_NUM_GROUPS,
                )
            else:
                block = BottleneckBlock(
                    in_channels,
                    out_channels,
                    bottleneck_channels=bottleneck_channels,
                    stride=stride,
                    num_groups=r.NUM_GROUPS,
                    norm=norm,
                    stride_in_1x1=r.STRIDE_IN_1X1,
                )
            blocks.append(block)
            in_channels = out_channels
        stages.append(blocks)
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


class SipMaskFPN(FPN):
    """Detectron2 FPN whose images only need padding to a multiple of 32 (not to P7's stride)."""

    @property
    def size_divisibility(self) -> int:
        return 32


@BACKBONE_REGISTRY.register()
def build_sipmask_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet (caffe style, optional DCN interval) + FPN P3-P5, P6 from P5 and P7 from ReLU(P6)."""
    bottom_up = build_sipmask_resnet_backbone(cfg, input_shape)
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
