"""VoVNetV2 / MobileNetV2 bottom-ups and their FPN builders (spec centermask.md sections 1-3, 8.1, 10.1)."""

from __future__ import annotations

import re

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from torch import nn

from onestage.backbone import VOVNET_SPECS, MobileNetV2, VoVNet
from onestage.backbone.vovnet import ESE, DeformConvUnit, OSAModule
from onestage.config import get_cfg
from onestage.layers import DeformConv, ModulatedDeformConv

# CONV_BODY -> (detection backbone params in M, ImageNet model params in M), spec table 1.6
PARAM_COUNTS = {
    "V-19-slim-dw-eSE": (1.38, 1.90),
    "V-19-slim-eSE": (2.65, 3.17),
    "V-19-eSE": (10.17, 11.21),
    "V-39-eSE": (25.16, 26.21),
    "V-57-eSE": (41.42, 42.48),
    "V-99-eSE": (69.47, 70.55),
}


def _cfg(**model):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    for key, value in model.items():
        node = cfg.MODEL
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _vovnet_cfg(body, fpn_name="build_fcos_vovnet_fpn_backbone", **kw):
    return _cfg(
        **{
            "BACKBONE.NAME": fpn_name,
            "VOVNET.CONV_BODY": body,
            "VOVNET.OUT_FEATURES": ["stage3", "stage4", "stage5"],
            "FPN.IN_FEATURES": ["stage3", "stage4", "stage5"],
            **kw,
        }
    )


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _expected_vovnet_params(body: str, dcn_stages=(False,) * 4, offset_ch: int = 27) -> int:
    """Conv + eSE parameter count of a VoVNet derived directly from the spec table (1.1-1.7)."""
    s = VOVNET_SPECS[body]
    s0, s1, s2 = s.stem_ch
    dw = s.depthwise
    n = 3 * 9 * s0
    n += (9 * s0 + s0 * s1) if dw else 9 * s0 * s1
    n += (9 * s1 + s1 * s2) if dw else 9 * s1 * s2
    in_ch = s2
    L = s.layer_per_block
    for i in range(4):
        conv, out = s.stage_conv_ch[i], s.stage_out_ch[i]
        for _ in range(s.block_per_stage[i]):
            if dw:
                n += in_ch * conv if in_ch != conv else 0  # reduction 1x1
                n += L * (9 * conv + conv * conv)
            else:
                n += 9 * in_ch * conv + (L - 1) * 9 * conv * conv
                if dcn_stages[i]:
                    n += (9 * in_ch + 1) * offset_ch + (L - 1) * (9 * conv + 1) * offset_ch
            n += (in_ch + L * conv) * out  # concat 1x1
            n += out * out + out  # eSE fc (with bias)
            in_ch = out
    return n


@pytest.mark.parametrize("body", list(PARAM_COUNTS))
def test_vovnet_parameter_counts(body):
    model = VoVNet(VOVNET_SPECS[body])
    n = _n_params(model)
    assert n == _expected_vovnet_params(body)
    assert round(n / 1e6, 2) == PARAM_COUNTS[body][0]
    # ImageNet model: + BN affine (FrozenBN keeps it in buffers) + a 1000-way linear on stage5
    bn_affine = sum(b.numel() for k, b in model.named_buffers() if k.endswith((".weight", ".bias")))
    c5 = VOVNET_SPECS[body].stage_out_ch[3]
    assert round((n + bn_affine + 1000 * c5 + 1000) / 1e6, 2) == PARAM_COUNTS[body][1]


def test_vovnet_dw_full_width_parameter_count():
    # V-19-dw-eSE (no published figure): stage2 input 64 != 128, so every stage has a reduction conv
    model = VoVNet(VOVNET_SPECS["V-19-dw-eSE"])
    assert _n_params(model) == _expected_vovnet_params("V-19-dw-eSE")
    assert all(
        getattr(model, f"stage{s}")[0 if s == 2 else 1].conv_reduction is not None for s in range(2, 6)
    )


def test_vovnet_dcn_parameter_count_and_layers():
    model = VoVNet(VOVNET_SPECS["V-39-eSE"], stage_with_dcn=(False, True, True, True), modulated_dcn=True)
    assert _n_params(model) == _expected_vovnet_params("V-39-eSE", (False, True, True, True), 27)
    for name in ("stage2", "stage3", "stage4", "stage5"):
        for osa in getattr(model, name).children():
            if not isinstance(osa, OSAModule):
                continue
            for layer in osa.layers:
                if name == "stage2":
                    assert isinstance(layer, nn.Sequential)
                else:
                    assert isinstance(layer, DeformConvUnit)
                    assert type(getattr(layer, layer.conv_name)) is ModulatedDeformConv
    v1 = VoVNet(VOVNET_SPECS["V-19-eSE"], stage_with_dcn=(True, False, False, True), deformable_groups=2)
    assert _n_params(v1) == _expected_vovnet_params("V-19-eSE", (True, False, False, True), 36)
    unit = v1.stage5.OSA5_1.layers[0]
    assert type(getattr(unit, unit.conv_name)) is DeformConv
    # forward/backward: the offset branch receives gradients through the deformable sampling
    small = VoVNet(
        VOVNET_SPECS["V-19-slim-eSE"], stage_with_dcn=(False, True, True, True), modulated_dcn=True
    )
    small(torch.randn(1, 3, 64, 64))["stage5"].square().sum().backward()
    offset_conv = small.stage4.OSA4_1.layers[1]._modules["OSA4_1_1/conv_offset"]
    assert offset_conv.weight.grad.abs().sum() > 0
    # dw takes precedence over DCN
    dw = VoVNet(VOVNET_SPECS["V-19-slim-dw-eSE"], stage_with_dcn=(True,) * 4, modulated_dcn=True)
    assert not any(isinstance(m, DeformConvUnit) for m in dw.modules())


@pytest.mark.parametrize("modulated", [False, True])
def test_dcn_unit_starts_as_plain_conv(modulated):
    """Zero-initialised offsets: v1 == conv unit; v2 == conv unit with mask sigmoid(0) = 0.5."""
    torch.manual_seed(0)
    unit = DeformConvUnit("OSA3_1_0", 8, 6, "FrozenBN", modulated, deformable_groups=2)
    conv = getattr(unit, "OSA3_1_0/conv")
    norm = getattr(unit, "OSA3_1_0/norm")
    assert getattr(unit, "OSA3_1_0/conv_offset").weight.shape == (54 if modulated else 36, 8, 3, 3)
    with torch.no_grad():
        norm.bias.fill_(0.1)
    x = torch.randn(2, 8, 5, 7)
    scale = 0.5 if modulated else 1.0
    expected = torch.relu(scale * torch.nn.functional.conv2d(x, conv.weight, padding=1) + 0.1)
    torch.testing.assert_close(unit(x), expected)
    # offsets do flow: a nonzero offset bias changes the output
    with torch.no_grad():
        getattr(unit, "OSA3_1_0/conv_offset").bias[:36].fill_(0.5)
    assert not torch.allclose(unit(x), expected)


def test_dcn_model_loads_plain_weights():
    """Deform convs are named like plain convs: a plain state dict loads, only conv_offset is missing."""
    plain = VoVNet(VOVNET_SPECS["V-39-eSE"]).state_dict()
    dcn = VoVNet(VOVNET_SPECS["V-39-eSE"], stage_with_dcn=(False, True, True, True), modulated_dcn=True)
    result = dcn.load_state_dict(plain, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all("/conv_offset." in k for k in result.missing_keys)
    assert len(result.missing_keys) == 2 * 5 * (1 + 2 + 2)  # weight+bias x 5 layers x blocks in stages 3-5


def test_ese_and_identity_by_hand():
    ese = ESE(2)
    with torch.no_grad():
        ese.fc.weight.zero_()
        ese.fc.bias.copy_(torch.tensor([0.0, -1.5]))
    x = torch.randn(1, 2, 3, 3)
    # hard_sigmoid(0) = 3/6 = 0.5, hard_sigmoid(-1.5) = 1.5/6 = 0.25
    torch.testing.assert_close(ese(x), x * torch.tensor([0.5, 0.25]).view(1, 2, 1, 1))
    with torch.no_grad():
        ese.fc.bias.copy_(torch.tensor([3.0, -3.0]))
    torch.testing.assert_close(ese(x), x * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))

    for identity in (True, False):
        osa = OSAModule(16, 8, 16, 3, "OSA4_2", "FrozenBN", identity=identity)
        assert osa.concat[0].in_channels == 16 + 3 * 8
        with torch.no_grad():
            osa.ese.fc.weight.zero_()
            osa.ese.fc.bias.fill_(-10.0)  # gate 0: the block reduces to its identity branch
        x = torch.randn(1, 16, 4, 4)
        torch.testing.assert_close(osa(x), x if identity else torch.zeros_like(x))


def test_identity_only_after_first_block():
    model = VoVNet(VOVNET_SPECS["V-99-eSE"])
    for s, n in zip(range(2, 6), (1, 3, 9, 3)):
        flags = [getattr(getattr(model, f"stage{s}"), f"OSA{s}_{b}").identity for b in range(1, n + 1)]
        assert flags == [False] + [True] * (n - 1)
    assert not hasattr(model.stage2, "Pooling")
    assert all(isinstance(getattr(model, f"stage{s}").Pooling, nn.MaxPool2d) for s in (3, 4, 5))


@pytest.mark.parametrize("body", ["V-19-slim-dw-eSE", "V-19-slim-eSE"])
def test_vovnet_features_and_forward(body):
    spec = VOVNET_SPECS[body]
    names = ["stem", "stage2", "stage3", "stage4", "stage5"]
    model = VoVNet(spec, out_features=names)
    shapes = model.output_shape()
    assert list(shapes) == names
    assert [shapes[k].stride for k in names] == [4, 4, 8, 16, 32]
    assert [shapes[k].channels for k in names] == [spec.stem_ch[2], *spec.stage_out_ch]
    out = model(torch.randn(1, 3, 64, 64))
    for k in names:
        assert out[k].shape == (1, shapes[k].channels, 64 // shapes[k].stride, 64 // shapes[k].stride)
    # ceil-mode pooling: 72 -> stem 18 -> stage3 9 (8 in floor mode) -> 4 -> 2; 40 -> 10 -> 5 -> 2 -> 1
    out = VoVNet(spec, out_features=["stage3", "stage5"])(torch.randn(1, 3, 72, 40))
    assert list(out) == ["stage3", "stage5"]
    assert out["stage3"].shape[-2:] == (9, 5) and out["stage5"].shape[-2:] == (2, 1)


def test_vovnet_freeze_at():
    def frozen(model, name):
        return {p.requires_grad for p in getattr(model, name).parameters()} == {False}

    def trainable(model, name):
        return {p.requires_grad for p in getattr(model, name).parameters()} == {True}

    names = ["stem", "stage2", "stage3", "stage4", "stage5"]
    for k in (-1, 0, 1, 3, 5):
        cfg = _vovnet_cfg("V-19-slim-eSE", **{"BACKBONE.FREEZE_AT": k})
        model = build_backbone(cfg).bottom_up
        for i, name in enumerate(names):
            assert (frozen if i < k else trainable)(model, name), (k, name)

    cfg = _vovnet_cfg("V-19-eSE", **{"BACKBONE.FREEZE_AT": 2, "VOVNET.NORM": "BN"})
    model = build_backbone(cfg).bottom_up
    stem_norm = model.stem._modules["stem_1/norm"]
    stage3_norm = model.stage3.OSA3_1.concat._modules["OSA3_1_concat/norm"]
    assert isinstance(stem_norm, FrozenBatchNorm2d)
    assert isinstance(model.stage2.OSA2_1.layers[0]._modules["OSA2_1_0/norm"], FrozenBatchNorm2d)
    assert type(stage3_norm) is not FrozenBatchNorm2d and isinstance(stage3_norm, nn.BatchNorm2d)
    assert stage3_norm.weight.requires_grad
    # default FrozenBN: conv weights train, norms hold no parameters
    model = build_backbone(_vovnet_cfg("V-19-slim-eSE")).bottom_up
    assert all(isinstance(m, FrozenBatchNorm2d) for n, m in model.named_modules() if n.endswith("norm"))


def test_unknown_conv_body():
    with pytest.raises(ValueError, match="V-39-eSE") as err:
        build_backbone(_vovnet_cfg("V-42-eSE"))
    assert "V-42-eSE" in str(err.value) and "V-19-slim-dw-eSE" in str(err.value)


def _prefixed_state_dict(backbone):
    return {f"backbone.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()}


def test_full_dcn_model_keys_and_shapes():
    cfg = _vovnet_cfg(
        "V-39-eSE", **{"VOVNET.STAGE_WITH_DCN": (False, True, True, True), "VOVNET.WITH_MODULATED_DCN": True}
    )
    sd = _prefixed_state_dict(build_backbone(cfg))
    bu = "backbone.bottom_up."
    expected = {
        bu + "stem.stem_1/conv.weight": (64, 3, 3, 3),
        bu + "stem.stem_2/conv.weight": (64, 64, 3, 3),
        bu + "stem.stem_3/norm.running_var": (128,),
        bu + "stage2.OSA2_1.layers.0.OSA2_1_0/conv.weight": (128, 128, 3, 3),
        bu + "stage2.OSA2_1.layers.4.OSA2_1_4/norm.weight": (128,),
        bu + "stage2.OSA2_1.concat.OSA2_1_concat/conv.weight": (256, 128 + 5 * 128, 1, 1),
        bu + "stage2.OSA2_1.ese.fc.weight": (256, 256, 1, 1),
        bu + "stage3.OSA3_1.layers.0.OSA3_1_0/conv_offset.weight": (27, 256, 3, 3),
        bu + "stage3.OSA3_1.layers.0.OSA3_1_0/conv_offset.bias": (27,),
        bu + "stage3.OSA3_1.layers.0.OSA3_1_0/conv.weight": (160, 256, 3, 3),
        bu + "stage3.OSA3_1.layers.1.OSA3_1_1/conv_offset.weight": (27, 160, 3, 3),
        bu + "stage3.OSA3_1.layers.0.OSA3_1_0/norm.bias": (160,),
        bu + "stage4.OSA4_2.layers.4.OSA4_2_4/conv.weight": (192, 192, 3, 3),
        bu + "stage4.OSA4_2.concat.OSA4_2_concat/conv.weight": (768, 768 + 5 * 192, 1, 1),
        bu + "stage5.OSA5_2.ese.fc.weight": (1024, 1024, 1, 1),
        bu + "stage5.OSA5_2.ese.fc.bias": (1024,),
        "backbone.fpn_lateral3.weight": (256, 512, 1, 1),
        "backbone.fpn_lateral3.bias": (256,),
        "backbone.fpn_lateral4.weight": (256, 768, 1, 1),
        "backbone.fpn_lateral5.weight": (256, 1024, 1, 1),
        "backbone.fpn_output3.weight": (256, 256, 3, 3),
        "backbone.fpn_output5.bias": (256,),
        "backbone.top_block.p6.weight": (256, 256, 3, 3),
        "backbone.top_block.p7.bias": (256,),
    }
    assert {k: sd.get(k) for k in expected} == expected
    assert bu + "stage2.OSA2_1.layers.0.OSA2_1_0/conv_offset.weight" not in sd
    assert bu + "stage3.OSA3_1.layers.0.OSA3_1_0/conv.bias" not in sd
    # every key has one of the forms listed in spec 10.1 (no extra buffers such as num_batches_tracked)
    norm = r"(norm|pw_norm)\.(weight|bias|running_mean|running_var)"
    unit = rf"(conv\.weight|conv_offset\.(weight|bias)|{norm})"
    patterns = [
        rf"stem\.stem_[123]/{unit}",
        rf"stage(\d)\.OSA\1_\d+\.layers\.(\d)\.OSA\1_\d+_\2/{unit}",
        rf"stage(\d)\.OSA\1_\d+\.concat\.OSA\1_\d+_concat/{unit}",
        r"stage\d\.OSA\d_\d+\.ese\.fc\.(weight|bias)",
    ]
    fpn = r"backbone\.(fpn_(lateral|output)[345]|top_block\.p[67])\.(weight|bias)"
    for key in sd:
        if key.startswith(bu):
            assert any(re.fullmatch(p, key[len(bu) :]) for p in patterns), key
        else:
            assert re.fullmatch(fpn, key), key


def test_lite_dw_keys_and_shapes():
    cfg = _vovnet_cfg("V-19-slim-dw-eSE", **{"FPN.OUT_CHANNELS": 128})
    sd = _prefixed_state_dict(build_backbone(cfg))
    bu = "backbone.bottom_up."
    expected = {
        bu + "stem.stem_1/conv.weight": (64, 3, 3, 3),
        bu + "stem.stem_1/norm.weight": (64,),
        bu + "stem.stem_2/dw_conv3x3.weight": (64, 1, 3, 3),
        bu + "stem.stem_2/pw_conv1x1.weight": (64, 64, 1, 1),
        bu + "stem.stem_3/pw_norm.running_mean": (64,),
        bu + "stage2.OSA2_1.layers.2.OSA2_1_2/dw_conv3x3.weight": (64, 1, 3, 3),
        bu + "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight": (80, 112, 1, 1),
        bu + "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/norm.bias": (80,),
        bu + "stage3.OSA3_1.layers.0.OSA3_1_0/dw_conv3x3.weight": (80, 1, 3, 3),
        bu + "stage3.OSA3_1.layers.0.OSA3_1_0/pw_conv1x1.weight": (80, 80, 1, 1),
        bu + "stage3.OSA3_1.concat.OSA3_1_concat/conv.weight": (256, 112 + 3 * 80, 1, 1),
        bu + "stage5.OSA5_1.conv_reduction.OSA5_1_reduction_0/conv.weight": (112, 384, 1, 1),
        "backbone.fpn_lateral3.weight": (128, 256, 1, 1),
        "backbone.fpn_lateral4.weight": (128, 384, 1, 1),
        "backbone.fpn_lateral5.weight": (128, 512, 1, 1),
        "backbone.top_block.p7.weight": (128, 128, 3, 3),
    }
    assert {k: sd.get(k) for k in expected} == expected
    assert not any(k.startswith(bu + "stage2.OSA2_1.conv_reduction") for k in sd)
    assert bu + "stem.stem_1/dw_conv3x3.weight" not in sd


def test_mobilenetv2_structure_params_and_keys():
    model = MobileNetV2(out_features=["res2", "res3", "res4", "res5"])
    assert len(model.features) == 18
    n = _n_params(model)
    bn = sum(b.numel() for k, b in model.named_buffers() if k.endswith((".weight", ".bias")))
    assert round(n / 1e6, 2) == 1.78 and round(bn / 1e6, 2) == 0.03
    # ImageNet model: + 1x1 conv 320->1280 with BN + 1000-way classifier (spec 1.6: 3.50 M)
    assert round((n + bn + 320 * 1280 + 2 * 1280 + 1281000) / 1e6, 2) == 3.50
    assert all(isinstance(m, FrozenBatchNorm2d) for m in model.modules() if "Norm" in type(m).__name__)
    residual = [i for i, f in enumerate(model.features) if getattr(f, "use_res_connect", False)]
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]

    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_var": (32,),
        "features.1.conv.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (32,),
        "features.1.conv.3.weight": (16, 32, 1, 1),
        "features.1.conv.4.bias": (16,),
        "features.2.conv.0.weight": (96, 16, 1, 1),
        "features.2.conv.3.weight": (96, 1, 3, 3),
        "features.2.conv.6.weight": (24, 96, 1, 1),
        "features.2.conv.7.running_mean": (24,),
        "features.17.conv.6.weight": (320, 960, 1, 1),
    }
    assert {k: sd.get(k) for k in expected} == expected
    assert "features.1.conv.6.weight" not in sd and not any(k.startswith("features.18") for k in sd)

    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (24, 4),
        "res3": (32, 8),
        "res4": (96, 16),
        "res5": (320, 32),
    }
    out = model(torch.randn(1, 3, 64, 64))
    for k, v in shapes.items():
        assert out[k].shape == (1, v.channels, 64 // v.stride, 64 // v.stride)


def test_mobilenetv2_residual_forward_by_hand():
    model = MobileNetV2(out_features=["res2"]).eval()
    block = model.features[3]  # 24 -> 24, stride 1
    with torch.no_grad():
        block.conv[-1].weight.zero_()  # last FrozenBN scale 0: the block is the identity
        block.conv[-1].bias.zero_()
    x = torch.randn(1, 24, 5, 5)
    torch.testing.assert_close(block(x), x)


def test_mobilenetv2_fpn_builders_and_freeze():
    common = {"RESNETS.OUT_FEATURES": ["res3", "res4", "res5"], "FPN.IN_FEATURES": ["res3", "res4", "res5"]}
    cfg = _cfg(**{"BACKBONE.NAME": "build_fcos_mobilenetv2_fpn_backbone", "FPN.OUT_CHANNELS": 128, **common})
    backbone = build_backbone(cfg)
    assert isinstance(backbone.bottom_up, MobileNetV2)
    assert {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()} == {
        f"p{i}": (128, 2**i) for i in range(3, 8)
    }
    sd = _prefixed_state_dict(backbone)
    assert sd["backbone.fpn_lateral3.weight"] == (128, 32, 1, 1)
    assert sd["backbone.fpn_lateral4.weight"] == (128, 96, 1, 1)
    assert sd["backbone.fpn_lateral5.weight"] == (128, 320, 1, 1)
    assert sd["backbone.bottom_up.features.0.0.weight"] == (32, 3, 3, 3)
    out = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(out[f"p{i}"].shape[-2:]) for i in range(3, 8)] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert all(p.requires_grad for p in backbone.parameters())

    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    bottom_up = build_backbone(cfg).bottom_up
    assert [all(not p.requires_grad for p in f.parameters()) for f in bottom_up.features[:3]] == [
        True,
        True,
        False,
    ]

    # the dead non-FCOS builders (no config used them) and MODEL.MOBILENET are gone
    assert "build_mobilenetv2_fpn_backbone" not in BACKBONE_REGISTRY
    assert "build_vovnet_fpn_backbone" not in BACKBONE_REGISTRY
    assert "MOBILENET" not in cfg.MODEL


def test_top_levels():
    def names(**kw):
        return list(build_backbone(_vovnet_cfg("V-19-slim-eSE", **kw)).output_shape())

    assert names() == ["p3", "p4", "p5", "p6", "p7"]
    assert names(**{"FCOS.TOP_LEVELS": 1}) == ["p3", "p4", "p5", "p6"]
    assert names(**{"FCOS.TOP_LEVELS": 0}) == ["p3", "p4", "p5"]
    with pytest.raises(ValueError, match="TOP_LEVELS"):
        names(**{"FCOS.TOP_LEVELS": 3})

    cfg = _vovnet_cfg("V-19-slim-eSE", **{"FCOS.TOP_LEVELS": 1})
    backbone = build_backbone(cfg)
    assert set(backbone.top_block.state_dict()) == {"p6.weight", "p6.bias"}
    # P6 is computed from P5 (not C5): feed P5 through top_block.p6 by hand
    out = backbone(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(out["p6"], backbone.top_block.p6(out["p5"]))
    cfg = _vovnet_cfg("V-19-slim-eSE")
    backbone = build_backbone(cfg)
    out = backbone(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(out["p7"], backbone.top_block.p7(torch.relu(backbone.top_block.p6(out["p5"]))))
    assert backbone.size_divisibility == 32


def test_resnet_fcos_fpn_builder():
    cfg = _cfg(
        **{
            "BACKBONE.NAME": "build_fcos_resnet_fpn_backbone",
            "BACKBONE.FREEZE_AT": 2,
            "RESNETS.OUT_FEATURES": ["res3", "res4", "res5"],
            "FPN.IN_FEATURES": ["res3", "res4", "res5"],
        }
    )
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    sd = _prefixed_state_dict(backbone)
    assert sd["backbone.fpn_lateral3.weight"] == (256, 512, 1, 1)
    assert sd["backbone.fpn_lateral5.weight"] == (256, 2048, 1, 1)
    assert sd["backbone.top_block.p7.weight"] == (256, 256, 3, 3)
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {f"p{i}": 2**i for i in range(3, 8)}
    assert not any(p.requires_grad for p in backbone.bottom_up.stem.parameters())


def test_backbone_config_defaults_and_yaml_merge(tmp_path):
    cfg = get_cfg()
    assert cfg.MODEL.FCOS.NUM_CLASSES == 80 and cfg.MODEL.FCOS.TOP_LEVELS == 2
    v = cfg.MODEL.VOVNET
    assert (v.CONV_BODY, v.NORM, v.OUT_CHANNELS, v.BACKBONE_OUT_CHANNELS) == (
        "V-39-eSE",
        "FrozenBN",
        256,
        256,
    )
    assert v.OUT_FEATURES == ["stage2", "stage3", "stage4", "stage5"]
    assert (
        tuple(v.STAGE_WITH_DCN) == (False,) * 4 and v.WITH_MODULATED_DCN is False and v.DEFORMABLE_GROUPS == 1
    )
    yaml = tmp_path / "dcn.yaml"
    yaml.write_text(
        "MODEL:\n  VOVNET:\n    CONV_BODY: V-57-eSE\n    STAGE_WITH_DCN: [False, True, True, True]\n"
        "    WITH_MODULATED_DCN: True\n"
    )
    cfg.merge_from_file(str(yaml))
    assert tuple(cfg.MODEL.VOVNET.STAGE_WITH_DCN) == (False, True, True, True)
