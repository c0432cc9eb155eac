"""VoVNetV2 bottom-up backbone (OSA modules with identity mapping and effective squeeze-excitation).

Module names reproduce the centermask2 checkpoint keys, e.g.
``stage3.OSA3_1.layers.0.OSA3_1_0/conv.weight``; the slash is part of the module name.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from torch import nn

from onestage.inference import winograd_conv, winograd_eligible, winograd_ready
from onestage.layers import DeformConv, ModulatedDeformConv, offset_conv

__all__ = ["VoVNet", "VOVNET_SPECS", "VoVNetSpec", "build_vovnet_backbone"]


@dataclass(frozen=True)
class VoVNetSpec:
    stem_ch: tuple[int, int, int]
    stage_conv_ch: tuple[int, int, int, int]  # 3x3 layer width per stage (2..5)
    stage_out_ch: tuple[int, int, int, int]  # concat (aggregation) width per stage
    layer_per_block: int
    block_per_stage: tuple[int, int, int, int]
    depthwise: bool


_FULL = dict(stem_ch=(64, 64, 128), stage_conv_ch=(128, 160, 192, 224), stage_out_ch=(256, 512, 768, 1024))
_SLIM = dict(stage_conv_ch=(64, 80, 96, 112), stage_out_ch=(112, 256, 384, 512))

VOVNET_SPECS: dict[str, VoVNetSpec] = {
    "V-19-slim-dw-eSE": VoVNetSpec(
        stem_ch=(64, 64, 64), **_SLIM, layer_per_block=3, block_per_stage=(1, 1, 1, 1), depthwise=True
    ),
    "V-19-dw-eSE": VoVNetSpec(
        stem_ch=(64, 64, 64),
        stage_conv_ch=_FULL["stage_conv_ch"],
        stage_out_ch=_FULL["stage_out_ch"],
        layer_per_block=3,
        block_per_stage=(1, 1, 1, 1),
        depthwise=True,
    ),
    "V-19-slim-eSE": VoVNetSpec(
        stem_ch=(64, 64, 128), **_SLIM, layer_per_block=3, block_per_stage=(1, 1, 1, 1), depthwise=False
    ),
    "V-19-eSE": VoVNetSpec(**_FULL, layer_per_block=3, block_per_stage=(1, 1, 1, 1), depthwise=False),
    "V-39-eSE": VoVNetSpec(**_FULL, layer_per_block=5, block_per_stage=(1, 1, 2, 2), depthwise=False),
    "V-57-eSE": VoVNetSpec(**_FULL, layer_per_block=5, block_per_stage=(1, 1, 4, 3), depthwise=False),
    "V-99-eSE": VoVNetSpec(**_FULL, layer_per_block=5, block_per_stage=(1, 3, 9, 3), depthwise=False),
}


def _conv_unit(prefix: str, in_ch: int, out_ch: int, norm: str, kernel_size: int = 3, stride: int = 1):
    """conv (no bias) -> norm -> ReLU, as (name, module) pairs."""
    return [
        (f"{prefix}/conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False)),
        (f"{prefix}/norm", get_norm(norm, out_ch)),
        (f"{prefix}/relu", nn.ReLU(inplace=True)),
    ]


def _dw_unit(prefix: str, in_ch: int, out_ch: int, norm: str, stride: int = 1):
    """Depthwise 3x3 -> pointwise 1x1 -> norm -> ReLU (nothing between the two convs)."""
    return [
        (f"{prefix}/dw_conv3x3", nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False)),
        (f"{prefix}/pw_conv1x1", nn.Conv2d(in_ch, out_ch, 1, bias=False)),
        (f"{prefix}/pw_norm", get_norm(norm, out_ch)),
        (f"{prefix}/pw_relu", nn.ReLU(inplace=True)),
    ]


class DeformConvUnit(nn.Module):
    """3x3 deformable conv (v1, or v2 when ``modulated``) -> norm -> ReLU; the offsets (and mask) come
    from a zero-initialised 3x3 conv on the same input. Children: ``{prefix}/conv_offset``,
    ``{prefix}/conv``, ``{prefix}/norm`` (centermask2's keys)."""

    def __init__(
        self, prefix: str, in_ch: int, out_ch: int, norm: str, modulated: bool, deformable_groups: int
    ):
        super().__init__()
        conv_cls = ModulatedDeformConv if modulated else DeformConv
        conv = conv_cls(in_ch, out_ch, 3, padding=1, bias=False, deformable_groups=deformable_groups)
        self.offset_name = f"{prefix}/conv_offset"
        self.conv_name = f"{prefix}/conv"
        self.norm_name = f"{prefix}/norm"
        self.add_module(self.offset_name, offset_conv(conv))
        self.add_module(self.conv_name, conv)
        self.add_module(self.norm_name, get_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = getattr(self, self.conv_name)
        x = conv.forward_offset_conv(x, getattr(self, self.offset_name)(x))
        return F.relu_(getattr(self, self.norm_name)(x))


class ESE(nn.Module):
    """Effective squeeze-excitation: x * hard_sigmoid(fc(avg_pool(x))), fc a 1x1 conv Ch -> Ch."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the (N, C, 1, 1) channel weights."""
        s = self.fc(F.adaptive_avg_pool2d(x, 1))
        return F.relu6(s + 3.0) / 6.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


@dataclass(frozen=True)
class DCNConfig:
    enabled: bool = False
    modulated: bool = False
    deformable_groups: int = 1


# Inference copies on CPU: OSA blocks on maps of at least this many positions run their 3x3 convs on
# NNPACK's Winograd transforms (NCHW) and the aggregation 1x1 conv as one matrix product per
# concatenated part, written channels-last (no concatenated copy). Measured on 2 threads (AVX-512),
# V-39 at 600x800: stage 2 (30k positions) and stage 3 (7.6k) gain; at 1.9k positions (stage 4)
# the direct NHWC convolutions are faster.
_WINOGRAD_MIN_POSITIONS = 5000


class OSAModule(nn.Module):
    """One-shot aggregation: L 3x3 layers in sequence, concat(input, all layer outputs), 1x1 conv, eSE,
    plus the input when ``identity``. (N, in_ch, H, W) -> (N, concat_ch, H, W)."""

    def __init__(
        self,
        in_ch: int,
        stage_ch: int,
        concat_ch: int,
        layer_per_block: int,
        module_name: str,
        norm: str,
        identity: bool = False,
        depthwise: bool = False,
        dcn: DCNConfig = DCNConfig(),
    ):
        super().__init__()
        self.identity = identity
        self.conv_reduction = None
        ch = in_ch
        if depthwise and in_ch != stage_ch:
            self.conv_reduction = nn.Sequential(
                OrderedDict(_conv_unit(f"{module_name}_reduction_0", in_ch, stage_ch, norm, kernel_size=1))
            )
            ch = stage_ch
        self.layers = nn.ModuleList()
        for i in range(layer_per_block):
            prefix = f"{module_name}_{i}"
            if depthwise:
                layer = nn.Sequential(OrderedDict(_dw_unit(prefix, stage_ch, stage_ch, norm)))
            elif dcn.enabled:
                layer = DeformConvUnit(prefix, ch, stage_ch, norm, dcn.modulated, dcn.deformable_groups)
            else:
                layer = nn.Sequential(OrderedDict(_conv_unit(prefix, ch, stage_ch, norm)))
            self.layers.append(layer)
            ch = stage_ch
        # the un-reduced input is what gets concatenated
        self.concat = nn.Sequential(
            OrderedDict(
                _conv_unit(
                    f"{module_name}_concat",
                    in_ch + layer_per_block * stage_ch,
                    concat_ch,
                    norm,
                    kernel_size=1,
                )
            )
        )
        self.ese = ESE(concat_ch)
        self._winograd: tuple | None = None  # set on prepared inference copies only

    def prepare_inference_(self) -> None:
        """On a prepared inference copy (norms folded): keep NCHW 3x3 weights and the aggregation
        weight split per concatenated part, transposed ([part channels, concat_ch]), for
        :meth:`_forward_winograd`; blocks with a reduction conv, deformable or depthwise layers or
        unfolded norms keep the plain forward."""
        self._winograd = None
        if self.conv_reduction is not None:
            return
        convs = []
        for layer in self.layers:
            if not isinstance(layer, nn.Sequential) or len(layer) != 3:
                return
            conv, norm, _ = layer
            if not winograd_eligible(conv) or not isinstance(norm, nn.Identity) or conv.bias is None:
                return
            convs.append((conv.weight.detach().contiguous(), conv.bias.detach()))
        conv, norm, _ = self.concat
        if not isinstance(norm, nn.Identity) or conv.bias is None:
            return
        widths = [conv.in_channels - sum(w.shape[0] for w, _ in convs)] + [w.shape[0] for w, _ in convs]
        weight = conv.weight.detach().reshape(conv.out_channels, conv.in_channels)
        parts = [p.t().contiguous() for p in torch.split(weight, widths, dim=1)]
        self._winograd = (convs, parts, conv.bias.detach())

    def _winograd_pays(self, x: torch.Tensor) -> bool:
        return (
            self._winograd is not None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.shape[-2] * x.shape[-1] >= _WINOGRAD_MIN_POSITIONS
            and not torch.is_autocast_enabled("cpu")
            and winograd_ready()
        )

    def _forward_winograd(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of a prepared copy: 3x3 convs on NCHW maps, then the aggregation conv as
        ``sum_k part_k^T @ W_k`` per image into an NHWC output (the next block, the pooling and the
        FPN take NHWC)."""
        convs, parts, bias = self._winograd
        identity_feat = x
        x = x.contiguous()
        feats = [x]
        for weight, b in convs:
            x = winograd_conv(x, weight, b).relu_()
            feats.append(x)
        n, _, h, w = x.shape
        out = x.new_empty((n, h, w, bias.shape[0]))
        for i in range(n):
            o = out[i].view(h * w, -1)
            torch.addmm(bias, feats[0][i].view(-1, h * w).t(), parts[0], out=o)
            for f, part in zip(feats[1:], parts[1:]):
                o.addmm_(f[i].view(-1, h * w).t(), part)
        x = out.permute(0, 3, 1, 2).relu_()
        x.mul_(self.ese.gate(x))  # in place: the output is ours (no fresh NHWC map to fault in)
        if self.identity:
            x.add_(identity_feat)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._winograd_pays(x):
            return self._forward_winograd(x)
        identity_feat = x
        outputs = [x]
        if self.conv_reduction is not None:
            x = self.conv_reduction(x)
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        x = self.ese(self.concat(torch.cat(outputs, dim=1)))
        if self.identity:
            x = x + identity_feat
        return x


class VoVNet(Backbone):
    """VoVNetV2. Features: ``stem`` (stride 4), ``stage2`` (4), ``stage3`` (8), ``stage4`` (16),
    ``stage5`` (32); only those in ``out_features`` are returned."""

    def __init__(
        self,
        spec: VoVNetSpec,
        in_channels: int = 3,
        out_features: list[str] | tuple[str, ...] = ("stage2", "stage3", "stage4", "stage5"),
        norm: str = "FrozenBN",
        stage_with_dcn: tuple[bool, bool, bool, bool] = (False, False, False, False),
        modulated_dcn: bool = False,
        deformable_groups: int = 1,
    ):
        super().__init__()
        stem_ch = spec.stem_ch
        unit = _dw_unit if spec.depthwise else _conv_unit
        stem = _conv_unit("stem_1", in_channels, stem_ch[0], norm, stride=2)
        stem += unit("stem_2", stem_ch[0], stem_ch[1], norm, stride=1)
        stem += unit("stem_3", stem_ch[1], stem_ch[2], norm, stride=2)
        self.stem = nn.Sequential(OrderedDict(stem))

        self._out_feature_strides = {"stem": 4}
        self._out_feature_channels = {"stem": stem_ch[2]}
        self.stage_names = []
        in_ch = stem_ch[2]
        for i in range(4):
            s = i + 2
            name = f"stage{s}"
            modules = OrderedDict()
            if s != 2:
                modules["Pooling"] = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
            dcn = DCNConfig(stage_with_dcn[i], modulated_dcn, deformable_groups)
            for b in range(spec.block_per_stage[i]):
                module_name = f"OSA{s}_{b + 1}"
                modules[module_name] = OSAModule(
                    in_ch,
                    spec.stage_conv_ch[i],
                    spec.stage_out_ch[i],
                    spec.layer_per_block,
                    module_name,
                    norm,
                    identity=b > 0,
                    depthwise=spec.depthwise,
                    dcn=dcn,
                )
                in_ch = spec.stage_out_ch[i]
            self.add_module(name, nn.Sequential(modules))
            self.stage_names.append(name)
            self._out_feature_channels[name] = in_ch
            self._out_feature_strides[name] = 2**s

        unknown = set(out_features) - set(self._out_feature_channels)
        if unknown:
            raise ValueError(
                f"VoVNet has no features {sorted(unknown)}; available: {list(self._out_feature_channels)}"
            )
        self._out_features = list(out_features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, C, H, W) -> {name: (N, channels[name], ceil(H / stride), ceil(W / stride))}."""
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> VoVNet:
        """Freeze the first ``freeze_at`` stages: 1 = stem, 2 = stem + stage2, ... Their parameters stop
        requiring grad and their (Sync)BatchNorm layers become FrozenBatchNorm2d."""
        modules = [self.stem] + [getattr(self, n) for n in self.stage_names]
        for module in modules[: max(freeze_at, 0)]:
            for p in module.parameters():
                p.requires_grad_(False)
            FrozenBatchNorm2d.convert_frozen_batchnorm(module)
        return self


@BACKBONE_REGISTRY.register()
def build_vovnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> VoVNet:
    """VoVNet from ``MODEL.VOVNET.*``; ``MODEL.BACKBONE.FREEZE_AT`` freezes its first stages."""
    conv_body = cfg.MODEL.VOVNET.CONV_BODY
    if conv_body not in VOVNET_SPECS:
        raise ValueError(f"Unknown MODEL.VOVNET.CONV_BODY {conv_body!r}; valid: {', '.join(VOVNET_SPECS)}")
    model = VoVNet(
        VOVNET_SPECS[conv_body],
        in_channels=input_shape.channels,
        out_features=cfg.MODEL.VOVNET.OUT_FEATURES,
        norm=cfg.MODEL.VOVNET.NORM,
        stage_with_dcn=tuple(cfg.MODEL.VOVNET.STAGE_WITH_DCN),
        modulated_dcn=cfg.MODEL.VOVNET.WITH_MODULATED_DCN,
        deformable_groups=cfg.MODEL.VOVNET.DEFORMABLE_GROUPS,
    )
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
