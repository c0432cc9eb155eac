"""Authors' checkpoint layouts (spec 10) load into our models with no missing / unexpected keys."""

import re

import pytest
import torch
from detectron2.modeling import build_model

from centermask.convert import convert_centermask2, convert_centermask_mb
from onestage.config import get_cfg
from tools.convert_checkpoint import main as convert_main

CONFIGS = "configs/CenterMask"


def _model(config: str):
    cfg = get_cfg()
    cfg.merge_from_file(f"{CONFIGS}/{config}")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


@pytest.fixture(scope="module")
def lite_v19():
    return _model("centermask_lite_V_19_eSE_FPN_ms_4x.yaml")


@pytest.fixture(scope="module")
def full_v39():
    return _model("centermask_V_39_eSE_FPN_ms_3x.yaml")


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _random_like(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.randn(s) for k, s in shapes.items()}


def _strict_load(model, state_dict):
    result = model.load_state_dict(state_dict, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_full_model_keys_and_shapes_follow_spec(full_v39):
    s = _shapes(full_v39)
    expected = {
        "backbone.bottom_up.stem.stem_1/conv.weight": (64, 3, 3, 3),
        "backbone.bottom_up.stage4.OSA4_2.ese.fc.weight": (768, 768, 1, 1),
        "backbone.fpn_lateral3.weight": (256, 512, 1, 1),
        "backbone.fpn_lateral4.weight": (256, 768, 1, 1),
        "backbone.fpn_lateral5.weight": (256, 1024, 1, 1),
        "backbone.fpn_output5.bias": (256,),
        "backbone.top_block.p6.weight": (256, 256, 3, 3),
        "backbone.top_block.p7.bias": (256,),
        "proposal_generator.fcos_head.cls_logits.weight": (80, 256, 3, 3),
        "proposal_generator.fcos_head.bbox_pred.weight": (4, 256, 3, 3),
        "proposal_generator.fcos_head.ctrness.weight": (1, 256, 3, 3),
        "roi_heads.mask_head.mask_fcn4.weight": (256, 256, 3, 3),
        "roi_heads.mask_head.spatialAtt.conv.weight": (1, 2, 3, 3),
        "roi_heads.mask_head.deconv.weight": (256, 256, 2, 2),
        "roi_heads.mask_head.predictor.weight": (80, 256, 1, 1),
        "roi_heads.maskiou_head.maskiou_fcn1.weight": (256, 257, 3, 3),
        "roi_heads.maskiou_head.maskiou_fcn4.weight": (256, 256, 3, 3),
        "roi_heads.maskiou_head.maskiou_fc1.weight": (1024, 12544),
        "roi_heads.maskiou_head.maskiou_fc2.weight": (1024, 1024),
        "roi_heads.maskiou_head.maskiou.weight": (80, 1024),
    }
    for i in range(5):
        expected[f"proposal_generator.fcos_head.scales.{i}.scale"] = (1,)
    for tower in ("cls_tower", "bbox_tower"):
        for i in (0, 3, 6, 9):
            expected[f"proposal_generator.fcos_head.{tower}.{i}.weight"] = (256, 256, 3, 3)
            expected[f"proposal_generator.fcos_head.{tower}.{i + 1}.weight"] = (256,)
    assert {k: s.get(k) for k in expected} == expected
    assert "roi_heads.mask_head.spatialAtt.conv.bias" not in s
    assert not any(k.startswith("proposal_generator.fcos_head.share_tower") for k in s)
    assert not any(k.startswith("roi_heads.mask_head.mask_fcn5") for k in s)
    assert not any(".fcos_head.cls_tower.12" in k for k in s)


def test_lite_model_keys_and_shapes_follow_spec(lite_v19):
    s = _shapes(lite_v19)
    assert s["backbone.fpn_lateral3.weight"] == (128, 512, 1, 1)
    assert s["proposal_generator.fcos_head.cls_tower.3.weight"] == (128, 128, 3, 3)
    assert s["proposal_generator.fcos_head.cls_tower.4.bias"] == (128,)
    assert not any(".cls_tower.6." in k for k in s)
    assert s["roi_heads.mask_head.mask_fcn2.weight"] == (128, 128, 3, 3)
    assert "roi_heads.mask_head.mask_fcn3.weight" not in s
    assert s["roi_heads.maskiou_head.maskiou_fcn1.weight"] == (128, 129, 3, 3)
    assert s["roi_heads.maskiou_head.maskiou_fc1.weight"] == (1024, 6272)


# ------------------------------------------------------------- centermask2 layout, from the spec's key table

# spec 1.6: stem channels, stage conv channels, stage output (concat) channels, layers per OSA block,
# blocks per stage (stages 2..5)
VOVNET_SPECS = {
    "V-19-eSE": ((64, 64, 128), (128, 160, 192, 224), (256, 512, 768, 1024), 3, (1, 1, 1, 1)),
    "V-39-eSE": ((64, 64, 128), (128, 160, 192, 224), (256, 512, 768, 1024), 5, (1, 1, 2, 2)),
}
# config -> (CONV_BODY, FPN C, FCOS convs per tower, mask head D and convs, MaskIoU head E and convs)
SPEC_MODELS = {
    "lite_v19": ("V-19-eSE", 128, 2, 128, 2, 128, 2),
    "full_v39": ("V-39-eSE", 256, 4, 256, 4, 256, 4),
}
K = 80


def _frozen_bn(prefix: str, ch: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": (ch,) for name in ("weight", "bias", "running_mean", "running_var")}


def _conv(prefix: str, out_ch: int, in_ch: int, k: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out_ch, in_ch, k, k), **({f"{prefix}.bias": (out_ch,)} if bias else {})}


def centermask2_spec_shapes(model: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a centermask2 checkpoint, generated from spec 1.1-1.6 and 10.1 only (VoVNet
    without dw / DCN, FrozenBN norms, GN FCOS towers), independently of this project's modules."""
    body, c, towers, d, mask_convs, e, iou_convs = SPEC_MODELS[model]
    stem, stage_ch, out_ch, layers, blocks = VOVNET_SPECS[body]
    bu = "backbone.bottom_up."
    keys: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for unit, ch in enumerate(stem, start=1):
        keys |= _conv(f"{bu}stem.stem_{unit}/conv", ch, in_ch, 3, bias=False)
        keys |= _frozen_bn(f"{bu}stem.stem_{unit}/norm", ch)
        in_ch = ch
    for s, sc, oc, nb in zip(range(2, 6), stage_ch, out_ch, blocks, strict=True):
        for b in range(1, nb + 1):
            osa, prefix = f"OSA{s}_{b}", f"{bu}stage{s}.OSA{s}_{b}."
            x = in_ch
            for i in range(layers):
                keys |= _conv(f"{prefix}layers.{i}.{osa}_{i}/conv", sc, x, 3, bias=False)
                keys |= _frozen_bn(f"{prefix}layers.{i}.{osa}_{i}/norm", sc)
                x = sc
            keys |= _conv(f"{prefix}concat.{osa}_concat/conv", oc, in_ch + layers * sc, 1, bias=False)
            keys |= _frozen_bn(f"{prefix}concat.{osa}_concat/norm", oc)
            keys |= _conv(f"{prefix}ese.fc", oc, oc, 1)
            in_ch = oc
    for level, ch in zip((3, 4, 5), out_ch[1:], strict=True):
        keys |= _conv(f"backbone.fpn_lateral{level}", c, ch, 1)
        keys |= _conv(f"backbone.fpn_output{level}", c, c, 3)
    keys |= _conv("backbone.top_block.p6", c, c, 3) | _conv("backbone.top_block.p7", c, c, 3)
    fcos = "proposal_generator.fcos_head."
    for tower in ("cls_tower", "bbox_tower"):
        for j in range(towers):  # conv at 3j, GroupNorm at 3j + 1, ReLU at 3j + 2
            keys |= _conv(f"{fcos}{tower}.{3 * j}", c, c, 3)
            keys |= {f"{fcos}{tower}.{3 * j + 1}.weight": (c,), f"{fcos}{tower}.{3 * j + 1}.bias": (c,)}
    keys |= _conv(f"{fcos}cls_logits", K, c, 3) | _conv(f"{fcos}bbox_pred", 4, c, 3)
    keys |= _conv(f"{fcos}ctrness", 1, c, 3)
    keys |= {f"{fcos}scales.{level}.scale": (1,) for level in range(5)}
    mask = "roi_heads.mask_head."
    for n in range(1, mask_convs + 1):
        keys |= _conv(f"{mask}mask_fcn{n}", d, c if n == 1 else d, 3)
    keys |= _conv(f"{mask}spatialAtt.conv", 1, 2, 3, bias=False)
    keys |= {f"{mask}deconv.weight": (d, d, 2, 2), f"{mask}deconv.bias": (d,)}
    keys |= _conv(f"{mask}predictor", K, d, 1)
    iou = "roi_heads.maskiou_head."
    for n in range(1, iou_convs + 1):
        keys |= _conv(f"{iou}maskiou_fcn{n}", e, d + 1 if n == 1 else e, 3)
    keys |= {f"{iou}maskiou_fc1.weight": (1024, e * 49), f"{iou}maskiou_fc1.bias": (1024,)}
    keys |= {f"{iou}maskiou_fc2.weight": (1024, 1024), f"{iou}maskiou_fc2.bias": (1024,)}
    keys |= {f"{iou}maskiou.weight": (K, 1024), f"{iou}maskiou.bias": (K,)}
    return keys


def spec_checkpoint(model: str) -> dict[str, torch.Tensor]:
    """A DDP-saved centermask2 state dict: ``module.`` prefixes, old ``pixel_mean`` / ``pixel_std``
    buffers, and tensor number i filled with the value i (to check where each one lands)."""
    shapes = centermask2_spec_shapes(model)
    ckpt = {f"module.{k}": torch.full(s, float(i)) for i, (k, s) in enumerate(shapes.items())}
    ckpt["module.pixel_mean"] = torch.zeros(3, 1, 1)
    ckpt["module.pixel_std"] = torch.ones(3, 1, 1)
    return ckpt


def _check_loads_spec_checkpoint(model, converted: dict[str, torch.Tensor], spec_model: str) -> None:
    shapes = centermask2_spec_shapes(spec_model)
    ours = _shapes(model)
    assert sorted(set(ours) - set(converted)) == []  # missing
    assert sorted(set(converted) - set(ours)) == []  # unexpected
    assert {k: tuple(v.shape) for k, v in converted.items() if tuple(v.shape) != ours[k]} == {}
    _strict_load(model, converted)
    sd = model.state_dict()
    assert [k for i, k in enumerate(shapes) if not bool((sd[k] == float(i)).all())] == []


@pytest.mark.parametrize("spec_model", ["lite_v19", "full_v39"])
def test_centermask2_checkpoint_from_the_spec_loads_strictly(spec_model, request):
    model = request.getfixturevalue(spec_model)
    ckpt = spec_checkpoint(spec_model)
    converted = convert_centermask2(ckpt)
    assert set(converted) == {k.removeprefix("module.") for k in ckpt} - {"pixel_mean", "pixel_std"}
    _check_loads_spec_checkpoint(model, converted, spec_model)


def test_imagenet_backbone_file_with_or_without_prefix(lite_v19):
    bottom_up = lite_v19.backbone.bottom_up.state_dict()
    for prefix in ("", "backbone.bottom_up."):
        converted = convert_centermask2({prefix + k: v for k, v in bottom_up.items()})
        result = lite_v19.load_state_dict(converted, strict=False)
        assert result.unexpected_keys == []
        assert not any(k.startswith("backbone.bottom_up.") for k in result.missing_keys)


def test_convert_tool_centermask2_layout(tmp_path, lite_v19):
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save({"model": spec_checkpoint("lite_v19"), "iteration": 5}, src)
    assert convert_main(["centermask2", str(src), str(dst)]) == 0
    _check_loads_spec_checkpoint(lite_v19, torch.load(dst)["model"], "lite_v19")


# ------------------------------------------------------------- maskrcnn-benchmark [MB] layout


def to_mb(key: str) -> str:
    """Our key -> the [MB] key, written from the table of spec 10.3 (independent of the converter)."""
    fixed = {
        "roi_heads.mask_head.deconv": "roi_heads.mask.predictor.conv5_mask",
        "roi_heads.mask_head.predictor": "roi_heads.mask.predictor.mask_fcn_logits",
        "roi_heads.maskiou_head.maskiou": "roi_heads.maskiou.predictor.maskiou",
        "proposal_generator.fcos_head.ctrness": "rpn.head.centerness",
        "backbone.top_block": "backbone.fpn.top_blocks",
    }
    for ours, theirs in fixed.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours) :]
    m = re.match(r"backbone\.fpn_(lateral|output)(\d)\.(.*)", key)
    if m:
        kind = {"lateral": "inner", "output": "layer"}[m.group(1)]
        return f"backbone.fpn.fpn_{kind}{int(m.group(2)) - 1}.{m.group(3)}"
    for ours, theirs in [
        ("backbone.bottom_up.", "backbone.body."),
        ("proposal_generator.fcos_head.", "rpn.head."),
        ("roi_heads.mask_head.", "roi_heads.mask.feature_extractor."),
        ("roi_heads.maskiou_head.", "roi_heads.maskiou.feature_extractor."),
    ]:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise AssertionError(key)


@pytest.mark.parametrize(
    "config", ["centermask_lite_V_19_eSE_FPN_ms_4x.yaml", "centermask_lite_Mv2_FPN_ms_4x.yaml"]
)
def test_mb_checkpoint_loads_strictly(config, lite_v19):
    model = lite_v19 if "V_19" in config else _model(config)
    ours = _random_like(_shapes(model))
    ours = {k: v.abs() + 0.1 if k.endswith("running_var") else v for k, v in ours.items()}
    mb = {}
    for k, v in ours.items():
        if k.startswith(("roi_heads.mask_head.predictor.", "roi_heads.maskiou_head.maskiou.")):
            v = torch.cat([torch.full_like(v[:1], 7.0), v])  # 81 classes, background first
        mb["module." + to_mb(k)] = v
    assert "module.backbone.fpn.fpn_inner2.weight" in mb and "module.rpn.head.centerness.bias" in mb
    assert mb["module.roi_heads.mask.predictor.mask_fcn_logits.weight"].shape == (81, 128, 1, 1)

    converted = convert_centermask_mb(mb)
    _strict_load(model, converted)
    sd = model.state_dict()
    assert torch.equal(
        sd["roi_heads.mask_head.predictor.weight"], ours["roi_heads.mask_head.predictor.weight"]
    )
    assert torch.equal(sd["roi_heads.maskiou_head.maskiou.bias"], ours["roi_heads.maskiou_head.maskiou.bias"])
    assert torch.equal(sd["backbone.fpn_lateral3.weight"], ours["backbone.fpn_lateral3.weight"])
    # [MB] FrozenBN has no eps: Detectron2's (eps 1e-5) must compute the same scale weight / sqrt(var)
    var_key = next(k for k in sd if k.startswith("backbone.bottom_up.") and k.endswith("running_var"))
    w_key = var_key.removesuffix("running_var") + "weight"
    assert torch.equal(sd[var_key], ours[var_key])
    torch.testing.assert_close(
        sd[w_key] / torch.sqrt(sd[var_key] + 1e-5), ours[w_key] / torch.sqrt(ours[var_key])
    )


def test_mb_dcn_and_unknown_keys():
    w = torch.randn(27, 8, 3, 3)
    prefix = "backbone.body.stage3.OSA3_1.layers.0.OSA3_1_0"
    out = convert_centermask_mb({f"{prefix}/conv.offset.weight": w, f"{prefix}/conv.conv.weight": w})
    assert set(out) == {
        "backbone.bottom_up.stage3.OSA3_1.layers.0.OSA3_1_0/conv_offset.weight",
        "backbone.bottom_up.stage3.OSA3_1.layers.0.OSA3_1_0/conv.weight",
    }
    with pytest.raises(KeyError):
        convert_centermask_mb({"rpn.anchor_generator.cell_anchors.0": w})
