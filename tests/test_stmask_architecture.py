"""STMask architecture (spec stmask.md §2.3-2.8, §3.2, §6.2): FPN, protonet, FCA head, FCB feature
alignment, temporal fusion, initialisation. Checked against hand-computed values and plain references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from stmask_spec_keys import authors_shapes
from torch import nn

from onestage.config import get_cfg
from stmask.modeling.box_ops import make_priors
from stmask.modeling.fpn import STMaskFPN, build_stmask_resnet_fpn_backbone
from stmask.modeling.head import FeatureAlign, ProtoNet, STMaskHead, ali_offsets, init_stmask_weights
from stmask.modeling.temporal import TemporalNet, correlation, fusion_features, roi_boxes

SIZES_384x640 = [(48, 80), (24, 40), (12, 20), (6, 10), (3, 5)]
KERNELS = [(3, 3), (3, 5), (5, 3)]


# ---------------------------------------------------------------------------------------------------
# Temporal fusion


def _plain_correlation(ref, nxt, patch):
    b, c, h, w = ref.shape
    r = patch // 2
    out = torch.zeros(b, patch * patch, h, w, dtype=ref.dtype)
    for bi in range(b):
        for a in range(patch):
            for cc in range(patch):
                for y in range(h):
                    for x in range(w):
                        yy, xx = y + a - r, x + cc - r
                        if 0 <= yy < h and 0 <= xx < w:
                            out[bi, patch * a + cc, y, x] = sum(
                                float(ref[bi, ch, y, x]) * float(nxt[bi, ch, yy, xx]) for ch in range(c)
                            )
    return out


@pytest.mark.parametrize("patch", [11, 3])
def test_correlation_matches_plain_loop(patch):
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 8, 6, 7, generator=g, dtype=torch.float64)
    nxt = torch.randn(2, 8, 6, 7, generator=g, dtype=torch.float64)
    out = correlation(ref, nxt, patch)
    assert out.shape == (2, patch * patch, 6, 7)
    torch.testing.assert_close(out, _plain_correlation(ref, nxt, patch))
    if patch == 11:
        # displacement (a, c) = (0, 0), i.e. (-5, -5): only y, x >= 5 see nxt; the rest is the zero border
        assert out[:, 0, :5].abs().sum() == 0 and out[:, 0, :, :5].abs().sum() == 0
        # the centre channel is the per-pixel dot product
        torch.testing.assert_close(out[:, 60], (ref * nxt).sum(1))


def test_fusion_features():
    g = torch.Generator().manual_seed(1)
    p_ref, p_next = torch.randn(2, 1, 4, 16, 16, generator=g)
    u_ref, u_next = torch.randn(2, 1, 5, 16, 16, generator=g)
    z = fusion_features(p_ref, p_next, u_ref, u_next)
    assert z.shape == (1, 121 + 10, 16, 16)
    torch.testing.assert_close(z[:, :121], correlation(p_ref, p_next).div(4).clamp(min=0))
    torch.testing.assert_close(z[:, 121:126], u_ref.clamp(min=0))
    torch.testing.assert_close(z[:, 126:], u_next.clamp(min=0))


def test_roi_boxes_order_clamp_no_rounding():
    boxes = torch.tensor([[0.1, 0.2, 0.35, 0.5], [0.6, 0.9, 0.2, 0.1], [-0.1, -0.2, 1.2, 1.5]])
    out = roi_boxes(boxes, (24, 40))
    expected = torch.tensor([[4.0, 4.8, 14.0, 12.0], [8.0, 2.4, 24.0, 21.6], [0.0, 0.0, 40.0, 24.0]])
    torch.testing.assert_close(out, expected)


def _tiny_temporal_net(in_channels=3, m=4):
    return TemporalNet(in_channels=in_channels, channels=(4, 4, 8), num_prototypes=m)


def test_temporal_net_roi_align_aligned_pixel_coords():
    h4, w4 = 24, 40
    ys, xs = torch.meshgrid(torch.arange(h4), torch.arange(w4), indexing="ij")
    # Value = pixel centre coordinate (aligned=True: pixel x covers [x, x + 1]); clip 1 is shifted
    # by +100 so that the batch index is checked too.
    z = torch.stack([xs + 0.5, ys + 0.5, torch.ones(h4, w4)]).float()[None].repeat(2, 1, 1, 1)
    z[1] += 100
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.25, 0.875, 0.7], [0.5, 0.6, 0.1, 0.2]])
    batch_idx = torch.tensor([0, 1, 0])
    net = _tiny_temporal_net()
    feats = net.roi_features(z, boxes, batch_idx)
    assert feats.shape == (3, 3, 7, 7)
    mean = feats.mean(dim=(2, 3))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 * w4 + 100 * batch_idx
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 * h4 + 100 * batch_idx
    torch.testing.assert_close(mean[:, 0], cx, atol=1e-4, rtol=0)
    torch.testing.assert_close(mean[:, 1], cy, atol=1e-4, rtol=0)
    # the bins tile the box: first / last bin column centred 1/14 of the width inside the box edges
    x1, x2 = boxes[0, 0] * w4, boxes[0, 2] * w4
    torch.testing.assert_close(feats[0, 0, :, 0], (x1 + (x2 - x1) / 14).expand(7), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats[0, 0, :, 6], (x2 - (x2 - x1) / 14).expand(7), atol=1e-4, rtol=0)

    delta_box, delta_coeff = net(z, boxes, batch_idx)
    assert delta_box.shape == (3, 4) and delta_coeff.shape == (3, 4)
    x = feats
    for conv in (net.conv1, net.conv2, net.conv3):
        x = F.relu(conv(x))
    torch.testing.assert_close(delta_box, net.fc(x.mean(dim=(2, 3))))


def test_temporal_net_no_boxes():
    net = _tiny_temporal_net()
    z = torch.rand(2, 3, 24, 40, requires_grad=True)
    delta_box, delta_coeff = net(z, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert delta_box.shape == (0, 4) and delta_coeff.shape == (0, 4)
    (delta_box.sum() + delta_coeff.sum()).backward()


# ---------------------------------------------------------------------------------------------------
# FCB feature alignment


def test_ali_offsets_worked_example():
    # kernel 3x5, tx = 1, exp(0.2 tw) = 2, exp(0.2 th) = 1.5, ty = 0 (spec §2.7)
    box = torch.tensor([1.0, 0.0, math.log(2) / 0.2, math.log(1.5) / 0.2]).view(1, 4, 1, 1)
    off = ali_offsets(box, (3, 5))
    assert off.shape == (1, 30, 1, 1)
    dy = off[0, 0::2, 0, 0].view(3, 5)
    dx = off[0, 1::2, 0, 0].view(3, 5)
    torch.testing.assert_close(dy[0], torch.full((5,), -0.5))
    torch.testing.assert_close(dy[1], torch.zeros(5))
    torch.testing.assert_close(dy[2], torch.full((5,), 0.5))
    for r in range(3):
        torch.testing.assert_close(dx[r], torch.tensor([-1.5, -0.5, 0.5, 1.5, 2.5]))


def test_ali_offsets_per_location_and_zero_box():
    box = torch.zeros(2, 4, 3, 4)
    box[1, 1, 2, 3] = 2.0  # ty = 2 at one location of frame 1: dy = 0.1 * 2 * kh for every tap
    off = ali_offsets(box, (5, 3))
    assert off.shape == (2, 30, 3, 4)
    expected = torch.zeros_like(off)
    expected[1, 0::2, 2, 3] = 0.1 * 2 * 5
    torch.testing.assert_close(off, expected)


def test_ada_offsets_from_conv_offset_without_box_gradient():
    fa = FeatureAlign(4, 3, (3, 5), mode="ada")
    assert fa.conv_offset.weight.shape == (30, 4, 1, 1) and fa.conv_offset.bias is None
    box = torch.randn(2, 4, 5, 6, requires_grad=True)
    torch.testing.assert_close(fa.offsets(box), F.conv2d(box, fa.conv_offset.weight))
    out = fa(torch.randn(2, 4, 5, 6), box)
    out.sum().backward()
    assert box.grad is None and fa.conv_offset.weight.grad is not None
    assert FeatureAlign(4, 3, (3, 3), mode="ali").conv_offset is None


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ["ali", "ada"])
def test_feature_align_same_padding(kernel, mode):
    torch.manual_seed(0)
    fa = FeatureAlign(4, 3, kernel, mode=mode)
    assert fa.conv_adaption.bias is None and fa.conv_adaption.padding == (
        (kernel[0] - 1) // 2,
        (kernel[1] - 1) // 2,
    )
    x = torch.randn(2, 4, 7, 9)
    box = torch.zeros(2, 4, 7, 9)  # ali: zero offsets; ada: conv_offset(0) = 0
    out = fa(x, box)
    assert out.shape == (2, 3, 7, 9)
    pad = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    plain = F.conv2d(x, fa.conv_adaption.weight, padding=pad)
    torch.testing.assert_close(out, fa.conv(F.relu(plain)), atol=1e-5, rtol=1e-5)


def test_feature_align_integer_shift():
    # ali with tx = 10 / kw (centre shift of one cell to the right), tw = th = ty = 0: the deformable
    # conv samples x + 1, i.e. equals the plain conv of the input shifted left by one column.
    fa = FeatureAlign(2, 2, (3, 5), mode="ali")
    x = torch.randn(1, 2, 6, 8)
    box = torch.zeros(1, 4, 6, 8)
    box[:, 0] = 10 / 5
    # zero padding (1, 2) plus one more column on the right, then drop the first column: tap c of
    # output column j reads x[j + c + 1] (zero outside)
    padded = F.pad(x, (2, 3, 1, 1))[..., 1:]
    expected = F.conv2d(padded, fa.conv_adaption.weight)
    out = fa.conv_adaption(x, fa.offsets(box))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Head and protonet


def _tiny_head(fcb="none", **kw):
    args = dict(in_channels=4, num_classes=5, tower_depths=(2, 1, 0), num_prototypes=3, embed_dim=6, fcb=fcb)
    args.update(kw)
    return STMaskHead(**args)


def _features(sizes, channels=4, frames=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(frames, channels, h, w, generator=g) for h, w in sizes]


@pytest.mark.parametrize("fcb", ["none", "ali", "ada"])
def test_head_shapes_384x640(fcb):
    head = _tiny_head(fcb)
    feats = _features(SIZES_384x640)
    with torch.no_grad():
        preds = head(feats)
    n = 15345
    assert sum(h * w * 3 for h, w in SIZES_384x640) == n
    assert preds["loc"].shape == (2, n, 4)
    assert preds["conf"].shape == (2, n, 5)
    assert preds["centerness"].shape == (2, n)
    assert preds["track"].shape == (2, n, 6)
    assert preds["mask_coeff"].shape == (2, n, 3)
    assert preds["t2s"].shape == (2, 4, 24, 40)
    torch.testing.assert_close(preds["t2s"], head.upfeature(feats[1]))
    assert preds["centerness"].abs().max() <= 1
    torch.testing.assert_close(preds["track"].norm(dim=-1), torch.ones(2, n))
    assert len(make_priors(SIZES_384x640)) == n


def test_head_anchor_ordering_matches_priors():
    """Identity towers and a location-reading bbox conv: ``loc`` = (level location index, k, level, 0)
    per anchor, which must follow ``make_priors``' order."""
    sizes = [(4, 6), (2, 3), (1, 2)]
    head = _tiny_head(tower_depths=(2, 2, 2))
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        for seq in (head.upfeature, head.bbox_extra):
            for m in seq:
                if isinstance(m, nn.Conv2d):
                    m.weight[:, :, 1, 1] = torch.eye(4)
        for k, (kh, kw) in enumerate(KERNELS):
            layer = head.bbox_layer[k]
            layer.weight[0, 0, (kh - 1) // 2, (kw - 1) // 2] = 1.0  # loc[0] = input channel 0
            layer.weight[2, 1, (kh - 1) // 2, (kw - 1) // 2] = 1.0  # loc[2] = input channel 1
            layer.bias[1] = k
    feats = []
    for lvl, (h, w) in enumerate(sizes):
        x = torch.zeros(1, 4, h, w)
        x[0, 0] = torch.arange(h * w, dtype=torch.float32).view(h, w)
        x[0, 1] = lvl
        feats.append(x)
    with torch.no_grad():
        loc = head(feats)["loc"][0]
    priors = make_priors(sizes)
    assert len(loc) == len(priors) == 3 * (24 + 6 + 2)
    level = torch.cat([torch.full((3 * h * w,), i) for i, (h, w) in enumerate(sizes)])
    hf = torch.tensor([sizes[i][0] for i in level])
    wf = torch.tensor([sizes[i][1] for i in level])
    row = (priors[:, 1] * hf - 0.5).round()
    col = (priors[:, 0] * wf - 0.5).round()
    torch.testing.assert_close(loc[:, 0], row * wf + col)
    torch.testing.assert_close(loc[:, 1], torch.tensor([0.0, 1.0, 2.0]).repeat(len(loc) // 3))
    torch.testing.assert_close(loc[:, 2], level.float())
    # priors' shapes for the k cycle: (h, w) = (3, 3), (3, 5), (5, 3) cells
    torch.testing.assert_close(
        priors[:3, 2:] * torch.tensor([6.0, 4.0]), torch.tensor([[3.0, 3], [5, 3], [3, 5]])
    )


def test_head_fcb_uses_detached_box_of_same_shape():
    head = _tiny_head("ali")
    feats = _features([(5, 7)], frames=1)
    preds = head(feats)
    preds["conf"].sum().backward()
    # the class loss does not reach the box convs (offsets from the detached regression)
    assert all(p.grad is None for p in head.bbox_layer.parameters())
    assert head.conf_layer[1].conv_adaption.weight.grad is not None


def test_protonet_layout_and_output():
    net = ProtoNet(in_channels=4, channels=6, num_prototypes=3)
    assert [type(m).__name__ for m in net] == [
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "Upsample", "ReLU", "Conv2d", "ReLU", "Conv2d"
    ]  # fmt: skip
    assert net[6].mode == "bilinear" and not net[6].align_corners
    x = torch.randn(2, 4, 6, 10)
    out = net(x)
    assert out.shape == (2, 12, 20, 3) and out.min() >= 0
    y = x
    for i in (0, 2, 4):
        y = F.relu(net[i](y))
    y = F.relu(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
    y = F.relu(net[10](F.relu(net[8](y))))
    torch.testing.assert_close(out, y.permute(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------------
# State-dict layout against the authors' checkpoints (spec §6.2)


def _spec_keys(prefix: str, fcb: str = "none") -> dict[str, tuple]:
    """The spec's keys and shapes (C = 41, M = 32, E = 128) of the part under ``prefix``."""
    return {k: v for k, v in authors_shapes(50, 2, fcb).items() if k.startswith(prefix)}


def _shapes(module, prefix):
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def spec_cfg():
    cfg = get_cfg()
    return cfg


@pytest.mark.parametrize("fcb", ["none", "ali", "ada"])
def test_head_state_dict_matches_spec(spec_cfg, fcb):
    cfg = spec_cfg.clone()
    cfg.MODEL.STMASK.FCB = fcb
    head = STMaskHead(cfg)
    assert _shapes(head, "prediction_layers.0.") == _spec_keys("prediction_layers.0.", fcb)
    assert head.t2s_level == 1 and head.fcb == fcb
    small = STMaskHead(cfg, [ShapeSpec(channels=8, stride=s) for s in (8, 16, 32, 64, 128)])
    assert small.upfeature[0].weight.shape == (8, 8, 3, 3)
    # parameter-count differences between the released configs (spec §6.3)
    n_conf = sum(p.numel() for p in head.conf_layer.parameters())
    plain_conf = sum(41 * (256 * kh * kw + 1) for kh, kw in KERNELS)
    assert n_conf - plain_conf == {"none": 0, "ali": 69382423 - 66826519, "ada": 69382735 - 66826519}[fcb]


def test_protonet_and_temporal_net_state_dicts_match_spec(spec_cfg):
    proto = _spec_keys("proto_net.")
    assert _shapes(ProtoNet(spec_cfg), "proto_net.") == proto
    assert ProtoNet(spec_cfg, 8)[0].weight.shape == (256, 8, 3, 3)
    temporal = _spec_keys("TemporalNet.")
    assert _shapes(TemporalNet(spec_cfg), "TemporalNet.") == temporal


# ---------------------------------------------------------------------------------------------------
# FPN


def _small_backbone_cfg():
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH = 18
    r.STEM_OUT_CHANNELS = 8
    r.RES2_OUT_CHANNELS = 8
    r.OUT_FEATURES = ["res3", "res4", "res5"]
    r.DEFORM_ON_PER_STAGE = [False, False, False, False]
    r.NORM = "FrozenBN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.BACKBONE.NAME = "build_stmask_resnet_fpn_backbone"
    cfg.MODEL.STMASK.FPN_CHANNELS = 8
    return cfg


def test_fpn_small_resnet18():
    cfg = _small_backbone_cfg()
    assert BACKBONE_REGISTRY.get("build_stmask_resnet_fpn_backbone") is build_stmask_resnet_fpn_backbone
    torch.manual_seed(0)
    fpn = build_stmask_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(fpn, STMaskFPN) and fpn.size_divisibility == 32
    shapes = fpn.output_shape()
    assert list(shapes) == ["p3", "p4", "p5", "p6", "p7"]
    assert [s.stride for s in shapes.values()] == [8, 16, 32, 64, 128]
    assert all(s.channels == 8 for s in shapes.values())
    assert fpn.fpn_lateral3.weight.shape == (8, 16, 1, 1) and fpn.fpn_lateral5.weight.shape == (8, 64, 1, 1)
    assert fpn.fpn_lateral3.bias.abs().sum() == 0  # init rule: zero biases

    x = torch.randn(1, 3, 384, 640)
    with torch.no_grad():
        out = fpn(x)
        feats = fpn.bottom_up(x)
    assert [tuple(v.shape[-2:]) for v in out.values()] == SIZES_384x640
    assert out["p4"].shape == (1, 8, 24, 40)
    for name in ("p3", "p4", "p5"):
        assert out[name].min() >= 0
    # P6 has negatives; P7 is the conv of P6 itself (no ReLU in between) and has negatives too
    assert out["p6"].min() < 0 and out["p7"].min() < 0
    with torch.no_grad():
        torch.testing.assert_close(out["p6"], fpn.p6(out["p5"]))
        torch.testing.assert_close(out["p7"], F.conv2d(out["p6"], fpn.p7.weight, fpn.p7.bias, 2, 1))
        assert not torch.allclose(out["p7"], fpn.p7(out["p6"].clamp(min=0)))
        # top-down: bilinear (align_corners=False) to the exact size of the lower map
        m5 = fpn.fpn_lateral5(feats["res5"])
        m4 = fpn.fpn_lateral4(feats["res4"]) + F.interpolate(
            m5, size=(24, 40), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(out["p4"], F.relu(fpn.fpn_output4(m4)))


def test_fpn_odd_sizes_upsample_to_exact_size():
    cfg = _small_backbone_cfg()
    fpn = build_stmask_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    with torch.no_grad():
        out = fpn(torch.randn(1, 3, 200, 328))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(25, 41), (13, 21), (7, 11), (4, 6), (2, 3)]


# ---------------------------------------------------------------------------------------------------
# Initialisation rule (spec §3.2)


def test_init_stmask_weights():
    module = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Linear(4, 6))
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(7.0)
    init_stmask_weights(module)
    for layer, fan in ((module[0], 3 * 9 + 5 * 9), (module[2], 4 + 6)):
        bound = math.sqrt(6 / fan)
        assert layer.weight.abs().max() <= bound and layer.weight.std() > bound / 4
        assert layer.bias.abs().sum() == 0
    assert torch.all(module[1].weight == 7.0)  # 1-D weights are not touched
    assert module[1].bias.abs().sum() == 0
    head = _tiny_head("ada")
    assert all(p.abs().sum() == 0 for n, p in head.named_parameters() if n.endswith("bias"))
    fa = head.conf_layer[0]
    bound = math.sqrt(6 / (4 * 9 + 4 * 9))
    assert fa.conv_adaption.weight.abs().max() <= bound
