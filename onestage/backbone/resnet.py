"""ResNet with a deformable 3x3 conv on every k-th block of chosen stages.

Detectron2's ``build_resnet_backbone`` puts deformable convs on *every* block of a stage and needs the
compiled Detectron2 extension. The methods need a per-block rule (:func:`deform_block_flags`):
SipMask++ has DCNv1 on blocks 0, 3, 6, ... of res3-res5 (caffe layout, stride in the 1x1 conv), STMask
modulated DCNv2 with a bias on every 2nd (R-50) or 3rd (R-101) block (torchvision layout, stride in
the 3x3 conv). Stages are built block by block with the project's torchvision-based deformable conv;
parameter names are Detectron2's (``res3.0.conv2``, ``res3.0.conv2_offset``), so Detectron2 ResNet
checkpoints map one to one.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock
from torch import nn

from onestage.layers import DeformConv, ModulatedDeformConv, offset_conv

__all__ = ["DeformBottleneckBlock", "build_resnet_deform_backbone", "deform_block_flags"]


class DeformBottleneckBlock(CNNBlockBase):
    """Bottleneck whose 3x3 ``conv2`` is deformable, v1 or modulated v2 (``deform_modulated``), with
    offsets (and masks) from ``conv2_offset`` on the same input.

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
        deform_modulated: bool = False,
        deform_bias: bool = False,
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
        conv_cls = ModulatedDeformConv if deform_modulated else DeformConv
        self.conv2 = conv_cls(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            bias=deform_bias,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2_offset = offset_conv(self.conv2)
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in [self.conv1, self.conv3, self.shortcut]:
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        nn.init.kaiming_normal_(self.conv2.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2.forward_offset_conv(out, self.conv2_offset(out)))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


def deform_block_flags(num_blocks: int, interval: int) -> list[bool]:
    """Which blocks of a deformable stage get the deformable conv: 0, interval, 2 * interval, ...

    STMask's rule (stmask spec 2.2: block ``i`` iff ``i + dcn_layers >= num_blocks`` and
    ``i % interval == 0``) is this one, since its configs set ``dcn_layers`` to the stage's block
    count for every deformable stage.
    """
    return [b % interval == 0 for b in range(num_blocks)]


_BLOCKS_PER_DEPTH = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


@BACKBONE_REGISTRY.register()
def build_resnet_deform_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet from ``MODEL.RESNETS`` with a deformable conv on every ``DEFORM_INTERVAL``-th block of
    the stages in ``DEFORM_ON_PER_STAGE`` (v2 when ``DEFORM_MODULATED``, with a bias when
    ``DEFORM_BIAS``).

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
        raise ValueError("build_resnet_deform_backbone supports MODEL.RESNETS.RES5_DILATION = 1 only")
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
                block = DeformBottleneckBlock(
                    in_channels,
                    out_channels,
                    bottleneck_channels=bottleneck_channels,
                    stride=stride,
                    norm=norm,
                    stride_in_1x1=r.STRIDE_IN_1X1,
                    deform_num_groups=r.DEFORM_NUM_GROUPS,
                    deform_modulated=r.DEFORM_MODULATED,
                    deform_bias=r.DEFORM_BIAS,
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
