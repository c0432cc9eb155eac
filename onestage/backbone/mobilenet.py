"""MobileNetV2 (width 1.0) bottom-up backbone for CenterMask-Lite.

``features`` holds the stem conv (index 0) and 17 inverted-residual blocks (1..17); no final 1x1 conv
and no classifier. Every norm is ``FrozenBatchNorm2d``. Keys: ``features.{k}.conv.{i}.*``.
"""

from __future__ import annotations

import math

import torch
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2", "build_mnv2_backbone"]

# expansion t, out channels c, repeats n, stride of the first repeat s
_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# feature name -> (index in `features` whose output it is, stride, channels)
_OUTPUTS = {"res2": (3, 4, 24), "res3": (6, 8, 32), "res4": (13, 16, 96), "res5": (17, 32, 320)}


class InvertedResidual(nn.Module):
    """[1x1 expand -> BN -> ReLU6 ->] 3x3 depthwise -> BN -> ReLU6 -> 1x1 project -> BN, plus the input
    when the stride is 1 and the channel count is unchanged."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [
                nn.Conv2d(in_ch, hidden, 1, bias=False),
                FrozenBatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            FrozenBatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            FrozenBatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(Backbone):
    """Features ``res2`` (stride 4, 24 ch), ``res3`` (8, 32), ``res4`` (16, 96), ``res5`` (32, 320);
    only those in ``out_features`` are returned."""

    def __init__(
        self, in_channels: int = 3, out_features: list[str] | tuple[str, ...] = ("res3", "res4", "res5")
    ):
        super().__init__()
        unknown = set(out_features) - set(_OUTPUTS)
        if unknown:
            raise ValueError(f"MobileNetV2 has no features {sorted(unknown)}; available: {list(_OUTPUTS)}")
        ch = 32
        self.features = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, ch, 3, 2, 1, bias=False),
                    FrozenBatchNorm2d(ch),
                    nn.ReLU6(inplace=True),
                )
            ]
        )
        for t, c, n, s in _BLOCKS:
            for i in range(n):
                self.features.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        self._out_features = list(out_features)
        self._out_feature_strides = {k: v[1] for k, v in _OUTPUTS.items()}
        self._out_feature_channels = {k: v[2] for k, v in _OUTPUTS.items()}
        self._return_at = {_OUTPUTS[name][0]: name for name in self._out_features}
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, C, H, W) -> {name: (N, channels[name], H / stride, W / stride)} (sizes rounded up)."""
        outputs = {}
        last = max(self._return_at, default=-1)
        for idx, layer in enumerate(self.features[: last + 1]):
            x = layer(x)
            if idx in self._return_at:
                outputs[self._return_at[idx]] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> MobileNetV2:
        """Stop gradients to ``features[0 .. freeze_at - 1]`` (indices into ``features``, not stages)."""
        for layer in self.features[: max(freeze_at, 0)]:
            for p in layer.parameters():
                p.requires_grad_(False)
        return self


@BACKBONE_REGISTRY.register()
def build_mnv2_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> MobileNetV2:
    """MobileNetV2 returning ``MODEL.RESNETS.OUT_FEATURES`` (the Lite-Mv2 config reuses that key)."""
    model = MobileNetV2(input_shape.channels, cfg.MODEL.RESNETS.OUT_FEATURES)
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
