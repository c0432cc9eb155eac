"""The authors' checkpoint layouts (spec §5, key names and shapes written out here from the spec, not
from our model) convert with 0 missing and 0 unexpected keys and the right values."""

from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from onestage.config import get_cfg
from sipmask.convert import convert_sipmask_benchmark, convert_sipmask_mmdet
from tools.convert_checkpoint import main as convert_main

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "SipMask"
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(prefix: str, c: int, tracked: bool) -> dict:
    d = {
        f"{prefix}.weight": torch.rand(c) + 0.5,
        f"{prefix}.bias": torch.randn(c),
        f"{prefix}.running_mean": torch.randn(c),
        f"{prefix}.running_var": torch.rand(c) + 0.5,
    }
    if tracked:
        d[f"{prefix}.num_batches_tracked"] = torch.tensor(100)
    return d


def resnet_keys(prefix: str, stem: str, depth: int, dcn: bool, tracked: bool) -> dict:
    """mmdet (``stem=""``) / benchmark (``stem="stem."``) caffe ResNet keys, spec §5.1 / §5.2."""
    sd = {f"{prefix}{stem}conv1.weight": torch.randn(64, 3, 7, 7)}
    sd.update(_bn(f"{prefix}{stem}bn1", 64, tracked))
    in_c = 64
    for layer, n in enumerate(BLOCKS[depth], start=1):
        planes = 64 * 2 ** (layer - 1)
        for b in range(n):
            p = f"{prefix}layer{layer}.{b}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, in_c, 1, 1)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3)
            sd[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1)
            for k, c in ((1, planes), (2, planes), (3, planes * 4)):
                sd.update(_bn(f"{p}.bn{k}", c, tracked))
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, in_c, 1, 1)
                sd.update(_bn(f"{p}.downsample.1", planes * 4, tracked))
            if dcn and layer >= 2 and b % 3 == 0:
                sd[f"{p}.conv2.conv_offset.weight"] = torch.randn(18, planes, 3, 3)
                sd[f"{p}.conv2.conv_offset.bias"] = torch.randn(18)
            in_c = planes * 4
    return sd


def mask_branch_keys(h: str, align_bias: bool) -> dict:
    """Feature alignment, coefficient and basis-mask keys (same in both layouts, spec §5.1 / §5.2);
    the benchmark's alignment conv has a bias. ``feat_align.norm`` is present even without GN."""
    sd = {
        f"{h}feat_align.conv_offset.weight": torch.randn(72, 4, 1, 1),
        f"{h}feat_align.conv_adaption.weight": torch.randn(256, 256, 3, 3),
        f"{h}feat_align.norm.weight": torch.randn(256),
        f"{h}feat_align.norm.bias": torch.randn(256),
        f"{h}sip_cof.weight": torch.randn(128, 256, 3, 3),
        f"{h}sip_cof.bias": torch.randn(128),
        f"{h}sip_mask_lat0.weight": torch.randn(512, 768, 1, 1),
        f"{h}sip_mask_lat0.bias": torch.randn(512),
        f"{h}sip_mask_lat.weight": torch.randn(32, 512, 3, 3),
        f"{h}sip_mask_lat.bias": torch.randn(32),
    }
    if align_bias:
        sd[f"{h}feat_align.conv_adaption.bias"] = torch.randn(256)
    return sd


def mmdet_state_dict(
    depth: int, num_convs: int, gn: bool, dcn: bool = False, rescoring: bool = False
) -> dict:
    sd = resnet_keys("backbone.", "", depth, dcn, tracked=True)
    for i, c in enumerate((512, 1024, 2048)):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = torch.randn(256, c, 1, 1)
        sd[f"neck.lateral_convs.{i}.conv.bias"] = torch.randn(256)
    for i in range(5):
        sd[f"neck.fpn_convs.{i}.conv.weight"] = torch.randn(256, 256, 3, 3)
        sd[f"neck.fpn_convs.{i}.conv.bias"] = torch.randn(256)
    h = "bbox_head."
    for tower, n in (("cls_convs", num_convs - 1), ("reg_convs", num_convs)):
        for i in range(n):
            sd[f"{h}{tower}.{i}.conv.weight"] = torch.randn(256, 256, 3, 3)
            if gn:
                sd[f"{h}{tower}.{i}.gn.weight"] = torch.randn(256)
                sd[f"{h}{tower}.{i}.gn.bias"] = torch.randn(256)
            else:
                sd[f"{h}{tower}.{i}.conv.bias"] = torch.randn(256)
    for name, c in (("fcos_cls", 80), ("fcos_reg", 4), ("fcos_centerness", 1)):
        sd[f"{h}{name}.weight"] = torch.randn(c, 256, 3, 3)
        sd[f"{h}{name}.bias"] = torch.randn(c)
    for i in range(5):
        sd[f"{h}scales.{i}.scale"] = torch.tensor(1.0 + i)
    sd.update(mask_branch_keys(h, align_bias=False))
    if rescoring:
        chans = [1, 16, 16, 16, 32, 64, 128]
        for i in range(6):
            sd[f"{h}convs_scoring.{i}.conv.weight"] = torch.randn(chans[i + 1], chans[i], 3, 3)
            sd[f"{h}convs_scoring.{i}.conv.bias"] = torch.randn(chans[i + 1])
        sd[f"{h}mask_scoring.weight"], sd[f"{h}mask_scoring.bias"] = (
            torch.randn(80, 128, 1, 1),
            torch.randn(80),
        )
    return sd


def benchmark_state_dict(depth: int, prefix: str = "module.") -> dict:
    sd = resnet_keys("backbone.body.", "stem.", depth, dcn=False, tracked=False)
    for i, c in zip((2, 3, 4), (512, 1024, 2048)):
        sd[f"backbone.fpn.fpn_inner{i}.weight"] = torch.randn(256, c, 1, 1)
        sd[f"backbone.fpn.fpn_inner{i}.bias"] = torch.randn(256)
        sd[f"backbone.fpn.fpn_layer{i}.weight"] = torch.randn(256, 256, 3, 3)
        sd[f"backbone.fpn.fpn_layer{i}.bias"] = torch.randn(256)
    for p in ("p6", "p7"):
        sd[f"backbone.fpn.top_blocks.{p}.weight"] = torch.randn(256, 256, 3, 3)
        sd[f"backbone.fpn.top_blocks.{p}.bias"] = torch.randn(256)
    h = "rpn.head."
    for tower, n in (("cls_tower", 3), ("bbox_tower", 4)):
        for i in range(n):
            sd[f"{h}{tower}.{3 * i}.weight"] = torch.randn(256, 256, 3, 3)
            sd[f"{h}{tower}.{3 * i}.bias"] = torch.randn(256)
            sd[f"{h}{tower}.{3 * i + 1}.weight"] = torch.randn(256)
            sd[f"{h}{tower}.{3 * i + 1}.bias"] = torch.randn(256)
    for name, c in (("cls_logits", 80), ("bbox_pred", 4), ("centerness", 1)):
        sd[f"{h}{name}.weight"] = torch.randn(c, 256, 3, 3)
        sd[f"{h}{name}.bias"] = torch.randn(c)
    for i in range(5):
        sd[f"{h}scales.{i}.scale"] = torch.tensor([1.0 + i])
    sd.update(mask_branch_keys(h, align_bias=True))
    return {prefix + k: v for k, v in sd.items()}


def build(name: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / name))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def load_strict(model, converted: dict) -> None:
    ours = model.state_dict()
    missing = sorted(set(ours) - set(converted))
    unexpected = sorted(set(converted) - set(ours))
    assert missing == [] and unexpected == []
    for k, v in converted.items():
        assert v.shape == ours[k].shape, k
    model.load_state_dict(converted, strict=True)


MMDET_CASES = [
    ("sipmask_r50_caffe_fpn_gn_1x.yaml", dict(depth=50, num_convs=4, gn=True)),
    ("sipmask_r50_caffe_fpn_ssd_6x.yaml", dict(depth=50, num_convs=2, gn=False)),
    (
        "sipmask++_r101_caffe_fpn_ssd_gn_10x.yaml",
        dict(depth=101, num_convs=2, gn=True, dcn=True, rescoring=True),
    ),
]


@pytest.mark.parametrize("name,layout", MMDET_CASES, ids=[c[0] for c in MMDET_CASES])
def test_mmdet_checkpoint_loads_strictly(name, layout):
    torch.manual_seed(0)
    sd = mmdet_state_dict(**layout)
    converted = convert_sipmask_mmdet(sd)
    model = build(name)
    load_strict(model, converted)
    torch.testing.assert_close(
        model.backbone.bottom_up.res3[0].conv1.weight, sd["backbone.layer2.0.conv1.weight"]
    )
    torch.testing.assert_close(
        model.backbone.bottom_up.stem.conv1.norm.running_var, sd["backbone.bn1.running_var"]
    )
    torch.testing.assert_close(model.backbone.top_block.p6.weight, sd["neck.fpn_convs.3.conv.weight"])
    torch.testing.assert_close(model.backbone.fpn_lateral5.bias, sd["neck.lateral_convs.2.conv.bias"])
    torch.testing.assert_close(model.head.scales[2].scale, sd["bbox_head.scales.2.scale"])
    if layout.get("dcn"):
        torch.testing.assert_close(
            model.backbone.bottom_up.res4[21].conv2_offset.bias,
            sd["backbone.layer3.21.conv2.conv_offset.bias"],
        )


def test_benchmark_checkpoint_loads_strictly_with_module_prefix():
    torch.manual_seed(0)
    sd = benchmark_state_dict(50)
    converted = convert_sipmask_benchmark(sd)
    model = build("sipmask_R_50_FPN_1x.yaml")
    load_strict(model, converted)
    head = model.head
    torch.testing.assert_close(head.cls_convs[2].conv.bias, sd["module.rpn.head.cls_tower.6.bias"])
    torch.testing.assert_close(head.reg_convs[3].gn.weight, sd["module.rpn.head.bbox_tower.10.weight"])
    torch.testing.assert_close(head.fcos_reg.weight, sd["module.rpn.head.bbox_pred.weight"])
    assert head.scales[4].scale.shape == () and head.scales[4].scale.item() == 5.0
    torch.testing.assert_close(model.backbone.fpn_output3.weight, sd["module.backbone.fpn.fpn_layer2.weight"])
    # FrozenBN without eps -> Detectron2 FrozenBN with eps 1e-5: the same affine transform
    bn = model.backbone.bottom_up.res2[0].conv1.norm
    w, v = sd["module.backbone.body.layer1.0.bn1.weight"], sd["module.backbone.body.layer1.0.bn1.running_var"]
    b, mu = sd["module.backbone.body.layer1.0.bn1.bias"], sd["module.backbone.body.layer1.0.bn1.running_mean"]
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    torch.testing.assert_close(scale, w * v.rsqrt())
    torch.testing.assert_close(bn.bias - bn.running_mean * scale, b - mu * w * v.rsqrt())
    # without the prefix too
    assert (
        convert_sipmask_benchmark({k.removeprefix("module."): v for k, v in sd.items()}).keys()
        == converted.keys()
    )


def test_benchmark_r101_and_cli(tmp_path):
    sd = benchmark_state_dict(101, prefix="")
    src = tmp_path / "sipmask_R_101.pth"
    torch.save({"model": sd, "iteration": 270000}, src)
    dst = tmp_path / "out.pth"
    assert convert_main(["sipmask-benchmark", str(src), str(dst)]) == 0
    load_strict(build("sipmask_R_101_FPN_ms_3x.yaml"), torch.load(dst)["model"])


def test_unknown_keys_are_reported():
    sd = mmdet_state_dict(depth=50, num_convs=2, gn=False)
    sd["bbox_head.something_else.weight"] = torch.zeros(1)
    sd["neck.fpn_convs.5.conv.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="2 keys"):
        convert_sipmask_mmdet(sd)
    with pytest.raises(KeyError, match="cls_tower.2"):
        convert_sipmask_benchmark({"rpn.head.cls_tower.2.weight": torch.zeros(1)})
