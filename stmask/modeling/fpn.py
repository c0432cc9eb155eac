"""STMask's FPN (spec stmask.md §2.3) over the shared deformable ResNet.

It differs from Detectron2's FPN: bilinear top-down upsampling to the exact lower size, a ReLU after
every output conv (P3-P5), and P6 / P7 by stride-2 convs on ReLU(P5) and on P6 with no ReLU between.
Module names map one to one onto the authors' ``fpn.lat_layers.{0,1,2}`` (``fpn_lateral5/4/3``),
``fpn.pred_layers.{0,1,2}`` (``fpn_output5/4/3``) and ``fpn.downsample_layers.{0,1}`` (``p6``, ``p7``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import Backbone
from torch import nn

from onestage.backbone import build_resnet_deform_backbone
from onestage.inference import InferenceCopy, is_fpn_output_conv, runs_inference_copy

from .head import init_stmask_weights

__all__ = ["STMaskFPN", "build_stmask_resnet_fpn_backbone"]


class STMaskFPN(Backbone):
    """FPN P3-P7 over three bottom-up maps C3, C4, C5 (strides s, 2s, 4s; outputs s ... 16s).
    Inference runs its prepared copy (:mod:`onestage.inference`: frozen norms folded, NHWC bottom-up,
    Winograd output convs)."""

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: Sequence[str] = ("res3", "res4", "res5"),
        out_channels: int = 256,
    ):
        """
        Args:
            bottom_up: backbone whose ``output_shape()`` has ``in_features``.
            in_features: names of C3, C4, C5 in ``bottom_up``'s outputs, finest first.
            out_channels: channels of every output level.
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if len(in_features) != 3 or missing:
            raise ValueError(
                f"STMaskFPN needs three bottom-up features (C3, C4, C5); got {list(in_features)}, "
                f"bottom-up outputs {sorted(shapes)}"
            )
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        c3, c4, c5 = (shapes[f].channels for f in in_features)
        self.fpn_lateral5 = nn.Conv2d(c5, out_channels, 1)
        self.fpn_lateral4 = nn.Conv2d(c4, out_channels, 1)
        self.fpn_lateral3 = nn.Conv2d(c3, out_channels, 1)
        self.fpn_output5 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.fpn_output4 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.fpn_output3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        # Not from a checkpoint: Xavier-uniform weights, zero biases (spec §3.2); the bottom-up keeps its own.
        for name, module in self.named_children():
            if name != "bottom_up":
                init_stmask_weights(module)
        self.inference_copy: InferenceCopy | None = InferenceCopy(winograd=is_fpn_output_conv)

        stride3 = shapes[in_features[0]].stride
        self._out_features = []
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        for i in range(5):
            stride = stride3 * 2**i
            name = f"p{int(math.log2(stride))}"
            self._out_features.append(name)
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = out_channels

    @property
    def size_divisibility(self) -> int:
        return 32

    @runs_inference_copy
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: (N, C, H, W) normalised, padded images.
        Returns:
            ``{"p3": (N, out_channels, H/8, W/8), ..., "p7": (N, out_channels, H/128, W/128)}`` (for
            a C3 of stride 8; sizes are those of the convs, rounded up).
        """
        feats = self.bottom_up(x)
        c3, c4, c5 = (feats[f] for f in self.in_features)
        m5 = self.fpn_lateral5(c5)
        m4 = self.fpn_lateral4(c4) + F.interpolate(
            m5, size=c4.shape[-2:], mode="bilinear", align_corners=False
        )
        m3 = self.fpn_lateral3(c3) + F.interpolate(
            m4, size=c3.shape[-2:], mode="bilinear", align_corners=False
        )
        p5 = F.relu(self.fpn_output5(m5))
        p4 = F.relu(self.fpn_output4(m4))
        p3 = F.relu(self.fpn_output3(m3))
        p6 = self.p6(p5)
        p7 = self.p7(p6)
        return dict(zip(self._out_features, (p3, p4, p5, p6, p7)))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_stmask_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> STMaskFPN:
    """``build_resnet_deform_backbone`` (``MODEL.RESNETS``, which must output res3-res5) + the STMask
    FPN with ``MODEL.STMASK.FPN_CHANNELS`` channels."""
    bottom_up = build_resnet_deform_backbone(cfg, input_shape)
    return STMaskFPN(
        bottom_up, in_features=("res3", "res4", "res5"), out_channels=cfg.MODEL.STMASK.FPN_CHANNELS
    )
