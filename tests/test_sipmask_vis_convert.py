"""SipMask-VIS checkpoints: the authors' mmdet state dict (built from the spec's key table,
sipmask_vis.md §9.2) converts into ``SipMaskVIS`` with 0 missing / 0 unexpected keys, and a COCO
SipMask image checkpoint converts into its training initialisation (§4.4)."""

import logging
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from onestage.config import load_config
from sipmask.convert import convert_sipmask_coco_to_vis, convert_sipmask_vis

CONFIG = "configs/SipMaskVIS/sipmask_r50_caffe_fpn_gn_1x.yaml"


def resnet50_caffe_keys() -> dict[str, tuple]:
    keys = {"backbone.conv1.weight": (64, 3, 7, 7)}
    bn = lambda prefix, c: {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}  # noqa: E731
    keys.update(bn("backbone.bn1", 64))
    in_ch = 64
    for layer, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"backbone.layer{layer}.{b}"
            keys[f"{p}.conv1.weight"] = (planes, in_ch, 1, 1)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            for k, c in ((1, planes), (2, planes), (3, 4 * planes)):
                keys.update(bn(f"{p}.bn{k}", c))
            keys[f"{p}.bn1.num_batches_tracked"] = ()
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (4 * planes, in_ch, 1, 1)
                keys.update(bn(f"{p}.downsample.1", 4 * planes))
            in_ch = 4 * planes
    return keys


def neck_keys() -> dict[str, tuple]:
    keys = {}
    for i, c in enumerate((512, 1024, 2048)):
        keys[f"neck.lateral_convs.{i}.conv.weight"] = (256, c, 1, 1)
        keys[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(5):
        keys[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        keys[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    return keys


def head_keys(num_classes: int, cls_convs: int, reg_convs: int, track: bool) -> dict[str, tuple]:
    h = "bbox_head."
    keys = {}
    towers = [("cls_convs", cls_convs), ("reg_convs", reg_convs)] + ([("track_convs", 2)] if track else [])
    for tower, n in towers:
        for i in range(n):
            keys[f"{h}{tower}.{i}.conv.weight"] = (256, 256, 3, 3)
            keys[f"{h}{tower}.{i}.gn.weight"] = (256,)
            keys[f"{h}{tower}.{i}.gn.bias"] = (256,)
    for name, out in (("fcos_cls", num_classes), ("fcos_reg", 4), ("fcos_centerness", 1), ("sip_cof", 128)):
        keys[f"{h}{name}.weight"] = (out, 256, 3, 3)
        keys[f"{h}{name}.bias"] = (out,)
    for i in range(5):
        keys[f"{h}scales.{i}.scale"] = ()
    keys[f"{h}feat_align.conv_offset.weight"] = (72, 4, 1, 1)
    keys[f"{h}feat_align.conv_adaption.weight"] = (256, 256, 3, 3)
    keys[f"{h}feat_align.norm.weight"] = (256,)
    keys[f"{h}feat_align.norm.bias"] = (256,)
    keys[f"{h}sip_mask_lat0.weight"] = (512, 768, 1, 1)
    keys[f"{h}sip_mask_lat0.bias"] = (512,)
    keys[f"{h}sip_mask_lat.weight"] = (32, 512, 3, 3)
    keys[f"{h}sip_mask_lat.bias"] = (32,)
    if track:
        keys[f"{h}sipmask_track.weight"] = (512, 768, 1, 1)
        keys[f"{h}sipmask_track.bias"] = (512,)
    return keys


def state_dict(shapes: dict[str, tuple], prefix: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {prefix + k: torch.rand(s, generator=g) + 0.5 for k, s in shapes.items()}


@pytest.fixture(scope="module")
def model():
    return build_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu"]))


def test_authors_vis_checkpoint_loads_with_nothing_missing_or_unexpected(model, tmp_path):
    shapes = {**resnet50_caffe_keys(), **neck_keys(), **head_keys(40, 2, 3, track=True)}
    source = state_dict(shapes, prefix="module.")
    path = tmp_path / "sipmask_vis.pth"
    torch.save({"state_dict": source, "meta": {"epoch": 12}}, path)
    out = tmp_path / "converted.pth"
    done = subprocess.run(
        [sys.executable, "tools/convert_checkpoint.py", "sipmask-vis", str(path), str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    converted = torch.load(out, weights_only=False)["model"]
    result = model.load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(model.head.sipmask_track.weight, source["module.bbox_head.sipmask_track.weight"])
    assert torch.equal(model.head.track_convs[1].gn.bias, source["module.bbox_head.track_convs.1.gn.bias"])
    assert torch.equal(model.backbone.fpn_output5.bias, source["module.neck.fpn_convs.2.conv.bias"])
    assert torch.equal(model.backbone.top_block.p7.weight, source["module.neck.fpn_convs.4.conv.weight"])


def test_unknown_keys_are_refused():
    shapes = {**resnet50_caffe_keys(), **neck_keys(), **head_keys(40, 2, 3, track=True)}
    sd = state_dict(shapes)
    sd["bbox_head.track_fc.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="track_fc"):
        convert_sipmask_vis(sd)


def test_coco_image_checkpoint_initialises_the_vis_model(model, caplog):
    shapes = {**resnet50_caffe_keys(), **neck_keys(), **head_keys(80, 3, 4, track=False)}
    with caplog.at_level(logging.INFO, logger="sipmask.convert"):
        converted = convert_sipmask_coco_to_vis(state_dict(shapes))
    result = model.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(
        ["head.fcos_cls.weight", "head.fcos_cls.bias", "head.sipmask_track.weight", "head.sipmask_track.bias"]
        + [f"head.track_convs.{i}.{p}" for i in range(2) for p in ("conv.weight", "gn.weight", "gn.bias")]
    )
    assert "dropped 8 tensors" in caplog.text and "head.cls_convs.2.conv.weight" in caplog.text
    assert "head.reg_convs.3.gn.bias" in caplog.text and "head.fcos_cls.bias" in caplog.text
