"""SipMask head: towers, box-driven feature alignment, 2x2 spatial coefficients, basis masks and the
SipMask++ mask re-scoring net (spec §1.3-1.9).

Sub-module names are those of the mmdet head (``cls_convs.{i}.conv``, ``feat_align.conv_adaption``,
``sip_cof``, ...), so converting an mmdet checkpoint only swaps the prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

from onestage.inference import InferenceCopy, runs_inference_copy
from onestage.layers import DeformConv, Scale

__all__ = ["ConvModule", "FeatureAlign", "SipMaskHead"]


class ConvModule(nn.Module):
    """conv -> optional GroupNorm(32) ``gn`` -> optional ReLU, named like mmdet's ConvModule."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        norm: str = "",
        bias: bool = True,
        activation: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        if norm == "GN":
            self.gn = nn.GroupNorm(32, out_channels)
        elif norm:
            raise ValueError(f"SipMask towers support norm 'GN' or '', got {norm!r}")
        else:
            self.gn = None
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.gn is not None:
            x = self.gn(x)
        return F.relu(x) if self.activation else x


class FeatureAlign(nn.Module):
    """3x3 deformable conv whose offsets are a 1x1 conv of the (detached) box regression (§1.5).

    ``norm`` (GroupNorm 32) always exists, as in the authors' checkpoints, but is only applied when
    ``use_norm``.
    """

    def __init__(self, channels: int, deform_groups: int = 4, bias: bool = False, use_norm: bool = True):
        super().__init__()
        self.conv_offset = nn.Conv2d(4, deform_groups * 9 * 2, 1, bias=False)
        self.conv_adaption = DeformConv(
            channels, channels, 3, padding=1, deformable_groups=deform_groups, bias=bias
        )
        self.norm = nn.GroupNorm(32, channels)
        self.use_norm = use_norm
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.normal_(self.conv_adaption.weight, std=0.01)
        if self.conv_adaption.bias is not None:
            nn.init.zeros_(self.conv_adaption.bias)

    def forward(self, x: Tensor, shape: Tensor) -> Tensor:
        """x: (N, C, H, W) cls features; shape: (N, 4, H, W) box regression (stride units)."""
        x = self.conv_adaption(x, self.conv_offset(shape.detach()))
        if self.use_norm:
            x = self.norm(x)
        return F.relu(x)


class SipMaskHead(nn.Module):
    """Shared per-level prediction head plus the image-level basis-mask branch.

    ``forward(features)`` returns a dict:

    * ``cls_logits``: list over levels of (N, C, H_l, W_l);
    * ``bbox_reg``: list of (N, 4, H_l, W_l) ``(l, t, r, b)`` in units of the level stride;
    * ``centerness``: list of (N, 1, H_l, W_l) logits;
    * ``coeffs``: list of (N, 4 * K, H_l, W_l) spatial coefficients;
    * ``basis``: (N, K, 4 * H_3, 4 * W_3) non-negative basis masks (mask grid, stride 2).

    Inference runs its prepared copy (channels-last weights, :mod:`onestage.inference`).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        num_convs: int = 4,
        norm: str = "GN",
        tower_conv_bias: bool = False,
        align_dcn_bias: bool = False,
        align_deform_groups: int = 4,
        num_basis: int = 32,
        basis_lat_channels: int = 512,
        reg_activation: str = "linear",
        rescoring: bool = False,
        init: str = "mmdet",
        prior_prob: float = 0.01,
        coef_init_std: float = 0.001,
    ):
        super().__init__()
        channels = input_shape[0].channels
        if any(s.channels != channels for s in input_shape):
            raise ValueError("all FPN levels must have the same number of channels")
        if reg_activation not in ("linear", "relu"):
            raise ValueError(f"REG_ACTIVATION must be 'linear' or 'relu', got {reg_activation!r}")
        if num_convs < 1:
            raise ValueError("NUM_CONVS must be >= 1")
        self.num_classes = num_classes
        self.num_basis = num_basis
        self.reg_activation = reg_activation
        conv_bias = tower_conv_bias or not norm

        def tower(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                [ConvModule(channels, channels, 3, padding=1, norm=norm, bias=conv_bias) for _ in range(n)]
            )

        # the cls tower's last conv is the feature alignment
        self.cls_convs = tower(num_convs - 1)
        self.reg_convs = tower(num_convs)
        self.fcos_cls = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.fcos_reg = nn.Conv2d(channels, 4, 3, padding=1)
        self.fcos_centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in input_shape])
        self.feat_align = FeatureAlign(
            channels, align_deform_groups, bias=align_dcn_bias, use_norm=norm == "GN"
        )
        self.sip_cof = nn.Conv2d(channels, 4 * num_basis, 3, padding=1)
        self.sip_mask_lat0 = nn.Conv2d(3 * channels, basis_lat_channels, 1)
        self.sip_mask_lat = nn.Conv2d(basis_lat_channels, num_basis, 3, padding=1)
        self.rescoring = rescoring
        if rescoring:
            chans = [1, 16, 16, 16, 32, 64, 128]
            self.convs_scoring = nn.ModuleList(
                [ConvModule(chans[i], chans[i + 1], 3, stride=2, padding=0) for i in range(6)]
            )
            self.mask_scoring = nn.Conv2d(128, num_classes, 1)
        self._init_weights(init, prior_prob, coef_init_std)
        self.inference_copy: InferenceCopy | None = InferenceCopy(channels_last=False, winograd=True)

    def _init_weights(self, init: str, prior_prob: float, coef_init_std: float = 0.001) -> None:
        if init not in ("mmdet", "benchmark"):
            raise ValueError(f"INIT must be 'mmdet' or 'benchmark', got {init!r}")
        for tower in (self.cls_convs, self.reg_convs):
            for m in tower:
                nn.init.normal_(m.conv.weight, std=0.01)
                if m.conv.bias is not None:
                    nn.init.zeros_(m.conv.bias)
        for conv in (self.fcos_cls, self.fcos_reg, self.fcos_centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.fcos_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        if init == "mmdet":  # the benchmark leaves these at PyTorch's default init
            nn.init.normal_(self.sip_cof.weight, std=coef_init_std)
            nn.init.zeros_(self.sip_cof.bias)
            for conv in (self.sip_mask_lat0, self.sip_mask_lat):
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        if self.rescoring:
            for m in self.convs_scoring:
                nn.init.kaiming_normal_(m.conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.conv.bias)
            nn.init.normal_(self.mask_scoring.weight, std=0.001)
            nn.init.zeros_(self.mask_scoring.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        c = cfg.MODEL.SIPMASK
        return {
            "input_shape": input_shape,
            "num_classes": c.NUM_CLASSES,
            "num_convs": c.NUM_CONVS,
            "norm": c.NORM,
            "tower_conv_bias": c.TOWER_CONV_BIAS,
            "align_dcn_bias": c.ALIGN_DCN_BIAS,
            "align_deform_groups": c.ALIGN_DEFORM_GROUPS,
            "num_basis": c.NUM_BASIS,
            "basis_lat_channels": c.BASIS_LAT_CHANNELS,
            "reg_activation": c.REG_ACTIVATION,
            "rescoring": c.RESCORING,
            "init": c.INIT,
            "prior_prob": c.PRIOR_PROB,
            "coef_init_std": c.COEF_INIT_STD,
        }

    @runs_inference_copy
    def forward(self, features: list[Tensor]) -> dict[str, list[Tensor] | Tensor]:
        cls_logits, bbox_reg, centerness, coeffs, reg_feats = [], [], [], [], []
        for level, x in enumerate(features):
            reg_feat = x
            for layer in self.reg_convs:
                reg_feat = layer(reg_feat)
            t = self.scales[level](self.fcos_reg(reg_feat)).float()
            if self.reg_activation == "relu":
                t = F.relu(t)
            cls_feat = x
            for layer in self.cls_convs:
                cls_feat = layer(cls_feat)
            cls_feat = self.feat_align(cls_feat, t.to(cls_feat.dtype))
            cls_logits.append(self.fcos_cls(cls_feat))
            bbox_reg.append(t)
            centerness.append(self.fcos_centerness(reg_feat))
            coeffs.append(self.sip_cof(cls_feat))
            if level < 3:
                reg_feats.append(reg_feat)
        return {
            "cls_logits": cls_logits,
            "bbox_reg": bbox_reg,
            "centerness": centerness,
            "coeffs": coeffs,
            "basis": self.basis_masks(reg_feats),
        }

    def basis_masks(self, reg_feats: list[Tensor]) -> Tensor:
        """[P3, P4, P5] reg-tower features -> (N, K, 4 * H_3, 4 * W_3) basis masks (§1.6)."""
        h, w = reg_feats[0].shape[-2:]
        feats = [reg_feats[0]] + [
            F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False) for f in reg_feats[1:3]
        ]
        x = F.relu(self.sip_mask_lat0(torch.cat(feats, dim=1)))
        x = F.relu(self.sip_mask_lat(x))
        return F.interpolate(x, size=(4 * h, 4 * w), mode="bilinear", align_corners=False)

    def rescore(self, masks: Tensor) -> Tensor:
        """SipMask++ mask IoU prediction (§1.8): (N, H_m, W_m) soft masks -> (N, num_classes)."""
        if not self.rescoring:
            raise RuntimeError("this head was built without MODEL.SIPMASK.RESCORING")
        x = masks[:, None]
        if x.shape[0] == 0:
            return x.new_zeros((0, self.num_classes))
        for layer in self.convs_scoring:
            x = layer(x)
        x = F.relu(self.mask_scoring(x))
        return x.amax(dim=(2, 3))
