"""STMask checkpoints (spec stmask.md §6): the authors' state dict, generated here from the key table
of §6.2 (not from our model), has the sizes of §6.3, converts to our names, and ``describe_stmask``
names the config that builds it."""

import pytest
import torch
from detectron2.modeling import build_model
from stmask_spec_keys import authors_shapes, dcn_blocks

from onestage.checkpoint import LayoutError
from onestage.config import load_config
from stmask.convert import convert_stmask, describe_stmask, stmask_report
from tools.convert_checkpoint import main as convert_main


def meta_state_dict(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Shape-only tensors: conversion is renaming, no data needed."""
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def random_state_dict(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g) + 0.5
        for k, s in shapes.items()
    }


# name -> (depth, interval, fcb, entries, parameters) of spec §6.3
RELEASED = {
    "STMask_plus_base": (101, 3, "none", 741, 66_826_519),
    "STMask_plus_base_ali": (101, 3, "ali", 744, 69_382_423),
    "STMask_plus_base_ada": (101, 3, "ada", 747, 69_382_735),
    "STMask_plus_resnet50": (50, 2, "none", 423, 47_646_891),
    "STMask_plus_resnet50_ali": (50, 2, "ali", 426, 50_202_795),
    "STMask_plus_resnet50_ada": (50, 2, "ada", 429, 50_203_107),
}


def test_dcn_rule_gives_the_blocks_of_the_spec():
    assert sorted(dcn_blocks((3, 4, 23, 3), 3)) == [(1, 0), (1, 3)] + [(2, b) for b in range(0, 23, 3)] + [
        (3, 0)
    ]
    assert sorted(dcn_blocks((3, 4, 6, 3), 2)) == [(1, 0), (1, 2), (2, 0), (2, 2), (2, 4), (3, 0), (3, 2)]
    assert sorted(dcn_blocks((3, 4, 6, 3), 3)) == [(1, 0), (1, 3), (2, 0), (2, 3), (3, 0)]


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_checkpoints_have_the_sizes_of_the_spec_and_are_identified(name):
    depth, interval, fcb, entries, params = RELEASED[name]
    shapes = authors_shapes(depth, interval, fcb)
    learnable = sum(
        torch.Size(s).numel()
        for k, s in shapes.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert (len(shapes), learnable) == (entries, params)
    info = describe_stmask(meta_state_dict(shapes))
    assert (info.depth, info.deform_interval, info.fcb, info.num_classes) == (depth, interval, fcb, 40)
    assert (info.entries, info.parameters) == (entries, params)
    assert info.dcn_blocks == tuple(
        sorted(dcn_blocks({50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth], interval))
    )
    assert info.config == f"configs/STMask/{name}.yaml" and info.overrides == []
    cfg = load_config(info.config)
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.DEFORM_INTERVAL, cfg.MODEL.STMASK.FCB) == (
        depth,
        interval,
        fcb,
    )
    assert cfg.MODEL.STMASK.NUM_CLASSES == 40
    assert any("ytvis2021" in n for n in info.notes)


def test_ovis_checkpoint_names_the_ovis_config():
    info = describe_stmask(meta_state_dict(authors_shapes(101, 3, "ada", num_classes=26)))
    assert info.num_classes == 25 and info.config == "configs/STMask/STMask_plus_base_ada_ovis.yaml"
    assert load_config(info.config).MODEL.STMASK.NUM_CLASSES == 25 and info.overrides == []


def test_old_resnet50_interval_3_is_reported_with_the_override():
    shapes = authors_shapes(50, 3, "ada")
    info = describe_stmask(meta_state_dict(shapes))
    assert info.deform_interval == 3 and info.config == "configs/STMask/STMask_plus_resnet50_ada.yaml"
    assert info.overrides == ["MODEL.RESNETS.DEFORM_INTERVAL", "3"]
    assert "2021-06-27" in info.notes[0]
    report = stmask_report(meta_state_dict(shapes))
    assert "MODEL.RESNETS.DEFORM_INTERVAL 3" in report and "1.0, 1.3, 2.0, 2.3, 3.0" in report


def test_dcn_blocks_without_an_interval_rule_are_refused(tmp_path):
    shapes = authors_shapes(50, 2)
    for key in [k for k in shapes if k.startswith("backbone.layers.2.2.conv2.")]:
        if key != "backbone.layers.2.2.conv2.weight":
            del shapes[key]  # stage 2 now {0, 4}: no interval gives it together with stage 1 {0, 2}
    with pytest.raises(LayoutError, match=r"2\.0, 2\.4.*no MODEL\.RESNETS\.DEFORM_INTERVAL rule"):
        describe_stmask(meta_state_dict(shapes))
    path, out = tmp_path / "odd.pth", tmp_path / "out.pth"
    torch.save({k: torch.zeros(()).expand(s) for k, s in shapes.items()}, path)
    with pytest.raises(SystemExit, match="no config builds this backbone"):
        convert_main(["stmask", str(path), str(out)])
    assert not out.exists()


def test_key_mapping_of_sample_keys():
    shapes = authors_shapes(101, 3, "ada")
    sd = meta_state_dict(shapes)
    out = convert_stmask(sd)
    assert len(out) == len(sd) - sum(k.endswith("num_batches_tracked") for k in sd)
    expected = {
        "backbone.conv1.weight": "backbone.bottom_up.stem.conv1.weight",
        "backbone.bn1.running_var": "backbone.bottom_up.stem.conv1.norm.running_var",
        "backbone.layers.0.0.conv1.weight": "backbone.bottom_up.res2.0.conv1.weight",
        "backbone.layers.2.21.bn3.bias": "backbone.bottom_up.res4.21.conv3.norm.bias",
        "backbone.layers.3.0.downsample.0.weight": "backbone.bottom_up.res5.0.shortcut.weight",
        "backbone.layers.1.0.downsample.1.running_mean": "backbone.bottom_up.res3.0.shortcut.norm.running_mean",
        "backbone.layers.2.3.conv2.conv_offset_mask.weight": "backbone.bottom_up.res4.3.conv2_offset.weight",
        "backbone.layers.2.3.conv2.conv_offset_mask.bias": "backbone.bottom_up.res4.3.conv2_offset.bias",
        "backbone.layers.2.3.conv2.bias": "backbone.bottom_up.res4.3.conv2.bias",
        "fpn.lat_layers.0.weight": "backbone.fpn_lateral5.weight",
        "fpn.lat_layers.2.bias": "backbone.fpn_lateral3.bias",
        "fpn.pred_layers.0.weight": "backbone.fpn_output5.weight",
        "fpn.pred_layers.1.bias": "backbone.fpn_output4.bias",
        "fpn.downsample_layers.0.weight": "backbone.p6.weight",
        "fpn.downsample_layers.1.bias": "backbone.p7.bias",
        "proto_net.10.weight": "proto_net.10.weight",
        "prediction_layers.0.upfeature.0.weight": "head.upfeature.0.weight",
        "prediction_layers.0.track_extra.2.bias": "head.track_extra.2.bias",
        "prediction_layers.0.bbox_layer.1.weight": "head.bbox_layer.1.weight",
        "prediction_layers.0.conf_layer.2.conv_offset.weight": "head.conf_layer.2.conv_offset.weight",
        "prediction_layers.0.conf_layer.0.conv_adaption.weight": "head.conf_layer.0.conv_adaption.weight",
        "TemporalNet.conv1.weight": "temporal_net.conv1.weight",
        "TemporalNet.fc_coeff.bias": "temporal_net.fc_coeff.bias",
    }
    for src, dst in expected.items():
        assert out[dst] is sd[src], (src, dst)
    assert not any("num_batches_tracked" in k for k in out)
    assert "backbone.bottom_up.res4.4.conv2.bias" not in out  # not a DCN block (interval 3)


def test_wrappers_and_module_prefix():
    shapes = authors_shapes(50, 2, "ali")
    sd = meta_state_dict(shapes)
    plain = convert_stmask(sd)
    prefixed = {"module." + k: v for k, v in sd.items()}
    for wrapped in (prefixed, {"state_dict": prefixed}, {"model": sd, "iteration": 5}):
        out = convert_stmask(wrapped)
        assert out.keys() == plain.keys() and all(out[k] is plain[k] for k in out)
        assert describe_stmask(wrapped).fcb == "ali"


def test_unknown_keys_are_named():
    sd = meta_state_dict(authors_shapes(50, 2))
    sd["maskiou_net.0.weight"] = torch.empty(1, device="meta")
    sd["fpn.downsample_layers.2.weight"] = torch.empty(1, device="meta")
    with pytest.raises(KeyError, match=r"2 keys .*fpn\.downsample_layers\.2\.weight, maskiou_net\.0\.weight"):
        convert_stmask(sd)


def test_tool_converts_and_names_the_config(tmp_path, capsys):
    shapes = authors_shapes(50, 3, "none", num_classes=26)
    path = tmp_path / "STMask_plus_resnet50_OVIS.pth"
    torch.save({k: torch.zeros(()).expand(s) for k, s in shapes.items()}, path)  # 1-element storages
    out = tmp_path / "converted.pth"
    assert convert_main(["stmask", str(path), str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "configs/STMask/STMask_plus_resnet50_ovis.yaml with MODEL.RESNETS.DEFORM_INTERVAL 3" in stdout
    converted = torch.load(out, weights_only=False)["model"]
    assert len(converted) == sum(not k.endswith("num_batches_tracked") for k in shapes)


# Needs the STMask meta-architecture (lead) and its backbone / heads (H1): 0 missing, 0 unexpected,
# same shapes, and every tensor lands where the mapping says.
@pytest.mark.parametrize("name", ["STMask_plus_resnet50", "STMask_plus_resnet50_ali", "STMask_plus_base_ada"])
def test_converted_checkpoint_loads_into_build_model(name):
    depth, interval, fcb, _, _ = RELEASED[name]
    source = random_state_dict(authors_shapes(depth, interval, fcb))
    model = build_model(load_config(f"configs/STMask/{name}.yaml", ["MODEL.DEVICE", "cpu"]))
    converted = convert_stmask(source)
    ours = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in converted.items() if k in ours and ours[k].shape != v.shape}
    assert shapes == {}, {k: (s, tuple(ours[k].shape)) for k, s in shapes.items()}
    result = model.load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    loaded = model.state_dict()
    for src, dst in (
        ("backbone.layers.1.0.conv2.bias", "backbone.bottom_up.res3.0.conv2.bias"),
        ("backbone.layers.2.0.bn2.running_var", "backbone.bottom_up.res4.0.conv2.norm.running_var"),
        ("fpn.downsample_layers.1.weight", "backbone.p7.weight"),
        ("prediction_layers.0.mask_layer.2.weight", "head.mask_layer.2.weight"),
        ("TemporalNet.fc.bias", "temporal_net.fc.bias"),
    ):
        assert torch.equal(loaded[dst], source[src]), (src, dst)
