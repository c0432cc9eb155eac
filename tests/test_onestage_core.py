"""The shared core ``onestage``: IoU losses, Fast NMS, the FCOS decoder's options, the per-block
deformable ResNet, ``Scale``, checkpoint helpers, the training-mapper registry and ``get_cfg``; all
against hand-computed values or plain re-statements of the rules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from detectron2.data import DatasetMapper
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone.resnet import BottleneckBlock

from onestage.backbone import DeformBottleneckBlock, build_resnet_deform_backbone, deform_block_flags
from onestage.checkpoint import fold_frozen_bn_eps, rename_mb_fpn_key, strip_prefix
from onestage.config import get_cfg
from onestage.data import DATASET_MAPPER_REGISTRY, build_train_mapper
from onestage.fcos import select_fcos_detections
from onestage.layers import (
    ModulatedDeformConv,
    Scale,
    boxes_as_distances,
    fast_nms,
    iou_loss,
)

# ---------------------------------------------------------------- IoU losses

# (l, t, r, b) from a common point.
# Row 0: pred 2x2 inside target 4x4: Ap 4, At 16, I 4, U 16, IoU 1/4, enclosing 16; same centre.
# Row 1: pred (3, 1, 0, 1): 3 x 2, At (1, 2, 2, 1): 3 x 3; I = (1 + 0) x (1 + 1) = 2, U = 6 + 9 - 2 = 13,
#   IoU 2/13; enclosing (3 + 2) x (2 + 1) = 15; centres ((r - l)/2, (b - t)/2): (-1.5, 0) and (0.5, -0.5),
#   d^2 = 4 + 0.25 = 4.25, enclosing diagonal^2 = 5^2 + 3^2 = 34.
PRED = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
TARGET = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 2.0, 1.0]], dtype=torch.float64)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_iou_loss_types_hand_computed():
    iou = _t(1 / 4, 2 / 13)
    torch.testing.assert_close(iou_loss(PRED, TARGET, "iou"), -torch.log(iou))
    torch.testing.assert_close(iou_loss(PRED, TARGET, "linear_iou"), 1 - iou)
    torch.testing.assert_close(iou_loss(PRED, TARGET, "giou"), _t(1 - 1 / 4, 1 - (2 / 13 - 2 / 15)))
    torch.testing.assert_close(iou_loss(PRED, TARGET, "diou"), _t(1 - 1 / 4, 1 - 2 / 13 + 4.25 / 34))
    identical = iou_loss(TARGET, TARGET, "diou")
    torch.testing.assert_close(identical, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="l1"):
        iou_loss(PRED, TARGET, "l1")


def test_iou_loss_plus_one_and_smooth():
    # "+1" widths on row 0: pred 3 x 3 = 9, target 5 x 5 = 25, I = 3 x 3 = 9, U = 25, enclosing 25
    loss = iou_loss(PRED[:1], TARGET[:1], "iou", plus_one=True)
    torch.testing.assert_close(loss, _t(-math.log(9 / 25)))
    torch.testing.assert_close(iou_loss(PRED[:1], TARGET[:1], "giou", plus_one=True), _t(1 - 9 / 25))
    # row 1 with "+1": pred 4 x 3 = 12, target 4 x 4 = 16, I = 2 x 3 = 6, U = 22; enclosing 6 x 4 = 24;
    # the centres do not move, the diagonal^2 is 6^2 + 4^2 = 52
    torch.testing.assert_close(
        iou_loss(PRED[1:], TARGET[1:], "giou", plus_one=True), _t(1 - (6 / 22 - 2 / 24))
    )
    torch.testing.assert_close(
        iou_loss(PRED[1:], TARGET[1:], "diou", plus_one=True), _t(1 - 6 / 22 + 4.25 / 52)
    )
    # AdelaiDet's smoothing: (I + 1) / (U + 1)
    torch.testing.assert_close(iou_loss(PRED, TARGET, "linear_iou", smooth=1.0), _t(1 - 5 / 17, 1 - 3 / 14))


def test_iou_loss_disjoint_boxes_min_iou_and_overlap_clamp():
    # pred spans x in [5, 7] (l = -5, r = 7), target x in [-1, 1]: overlap width -5 + 1 = -4
    pred, target = _t(-5.0, 1.0, 7.0, 1.0)[None], _t(1.0, 1.0, 1.0, 1.0)[None]
    assert iou_loss(pred, target, "iou").item() == math.inf  # -log 0
    torch.testing.assert_close(iou_loss(pred, target, "iou", min_iou=1e-6), _t(-math.log(1e-6)))
    torch.testing.assert_close(iou_loss(pred, target, "linear_iou"), _t(1.0))
    # without the clamp: I = -4 x 2 = -8, U = 4 + 4 + 8 = 16, IoU = -1/2
    torch.testing.assert_close(iou_loss(pred, target, "linear_iou", clamp_overlap=False), _t(1.5))
    # GIoU: enclosing (-1..7) x (-1..1) = 16, U = 8: 1 - (0 - 8/16)
    torch.testing.assert_close(iou_loss(pred, target, "giou"), _t(1.5))


def test_iou_loss_enclose_eps():
    # row 1 with enclose_eps 1: enclosing area 15 + 1, diagonal^2 34 + 1
    torch.testing.assert_close(
        iou_loss(PRED[1:], TARGET[1:], "giou", enclose_eps=1.0), _t(1 - (2 / 13 - 3 / 16))
    )
    torch.testing.assert_close(
        iou_loss(PRED[1:], TARGET[1:], "diou", enclose_eps=1.0), _t(1 - 2 / 13 + 4.25 / 35)
    )


def test_diou_and_giou_on_boxes_via_boxes_as_distances():
    pred = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0, 5.0, 5.0]], dtype=torch.float64)
    assert boxes_as_distances(pred).tolist() == [[-0.0, -0.0, 4.0, 2.0]]
    assert boxes_as_distances(target).tolist() == [[-1.0, -1.0, 5.0, 5.0]]
    # by hand on the boxes: I = [1, 4] x [1, 2] = 3, areas 8 and 16, U = 21, IoU = 1/7;
    # centres (2, 1) and (3, 3): d^2 = 1 + 4 = 5; enclosing box (0, 0, 5, 5): c^2 = 25 + 25 = 50
    iou, d2, c2, enclose = 1 / 7, 5.0, 50.0, 25.0
    loss = iou_loss(boxes_as_distances(pred), boxes_as_distances(target), "diou")
    torch.testing.assert_close(loss, _t(1 - iou + d2 / c2))
    loss = iou_loss(boxes_as_distances(pred), boxes_as_distances(target), "giou")
    torch.testing.assert_close(loss, _t(1 - (iou - (enclose - 21) / enclose)))
    # translation invariance: the same boxes shifted by (+7, -3)
    shift = torch.tensor([7.0, -3.0, 7.0, -3.0], dtype=torch.float64)
    torch.testing.assert_close(
        iou_loss(boxes_as_distances(pred + shift), boxes_as_distances(target + shift), "diou"),
        _t(1 - iou + d2 / c2),
    )


# ---------------------------------------------------------------- Fast NMS

# Three 10 x 10 boxes shifted by 4 px: neighbours overlap by IoU 60/140 = 0.43, boxes 0 and 2 by
# 20/180 = 0.11. Box 1's best class is 1, boxes 0 and 2 are class 0.
NMS_BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
NMS_SCORES = torch.tensor([[0.9, 0.05], [0.1, 0.8], [0.7, 0.0]])


def test_cross_class_fast_nms_suppresses_across_classes_and_with_suppressed_boxes():
    rows, classes, scores = fast_nms(NMS_BOXES, NMS_SCORES, 0.2, 0.4, cross_class=True)
    # box 1 (class 1) is suppressed by box 0 (class 0); box 2 by box 1, although box 1 is itself
    # suppressed (Fast NMS); greedy NMS would have kept box 2 (IoU 0.11 with box 0)
    assert rows.tolist() == [0] and classes.tolist() == [0]
    torch.testing.assert_close(scores, torch.tensor([0.9]))
    # below the overlap: everything stays, each with its best class, by score
    rows, classes, scores = fast_nms(NMS_BOXES, NMS_SCORES, 0.2, 0.45, cross_class=True)
    assert rows.tolist() == [0, 1, 2] and classes.tolist() == [0, 1, 0]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8, 0.7]))
    # top_k: only the 2 best boxes are candidates; max_dets cuts the output
    assert fast_nms(NMS_BOXES, NMS_SCORES, 0.2, 0.45, top_k=2, cross_class=True)[0].tolist() == [0, 1]
    assert fast_nms(NMS_BOXES, NMS_SCORES, 0.2, 0.45, max_dets=1, cross_class=True)[0].tolist() == [0]
    # the score threshold applies to the best class score
    assert fast_nms(NMS_BOXES, NMS_SCORES, 0.75, 0.45, cross_class=True)[0].tolist() == [0, 1]
    empty = fast_nms(torch.zeros(0, 4), torch.zeros(0, 2), 0.2, 0.4, cross_class=True)
    assert [t.numel() for t in empty] == [0, 0, 0]


def test_class_wise_fast_nms_does_not_suppress_across_classes():
    rows, classes, scores = fast_nms(NMS_BOXES, NMS_SCORES, 0.2, 0.4)
    # class 0: boxes 0 (0.9) and 2 (0.7) overlap by 0.11 -> both kept; box 1 scores 0.1 <= 0.2.
    # class 1: box 1 (0.8) is its best; boxes 0 (0.05) and 2 (0.0) are below the threshold
    assert list(zip(rows.tolist(), classes.tolist())) == [(0, 0), (1, 1), (2, 0)]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8, 0.7]))
    # within one class, a suppressed box still suppresses
    same_class = torch.tensor([[0.9], [0.8], [0.7]])
    assert fast_nms(NMS_BOXES, same_class, 0.2, 0.4)[0].tolist() == [0]


# ---------------------------------------------------------------- FCOS decoder options


def _far_boxes(n: int) -> torch.Tensor:
    """n disjoint 10 x 10 boxes: NMS removes none of them."""
    x = torch.arange(n, dtype=torch.float32)[:, None] * 100
    return torch.cat([x, torch.zeros(n, 1), x + 10, torch.full((n, 1), 10.0)], dim=1)


def test_select_keep_ties_keeps_every_detection_tied_with_the_last():
    boxes = [_far_boxes(4)]
    cls = [torch.tensor([[0.9], [0.5], [0.5], [0.3]])]
    ctr = [torch.ones(4)]
    rows, _, scores = select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 2)
    assert len(rows) == 2 and rows[0] == 0 and rows[1] in (1, 2)
    rows, _, scores = select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 2, keep_ties=True)
    assert sorted(rows.tolist()) == [0, 1, 2]  # 0.5 ties with the 2nd: kept beyond post_nms_topk
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.5, 0.5]).sqrt())
    # a cut without ties is the plain top-k; <= 0 keeps all
    assert select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 3, keep_ties=True)[0].tolist() == [0, 1, 2]
    assert len(select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 0)[0]) == 4
    assert len(select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 0, keep_ties=True)[0]) == 4


def test_select_plus_one_changes_the_nms_decision():
    # continuous IoU 9 x 4 / (100 + 100 - 36) ... with the boxes below: 36/126 = 0.286 < 0.3,
    # "+1" IoU 10 x 5 / (100 + 100 - 50) = 50/150 = 0.333 > 0.3
    boxes = [torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]])]
    cls = [torch.tensor([[0.9], [0.8]])]
    ctr = [torch.ones(2)]
    assert select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.3, 100)[0].tolist() == [0, 1]
    assert select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.3, 100, plus_one=True)[0].tolist() == [0]
    # NMS is per class: the same boxes with different classes both stay
    cls2 = [torch.tensor([[0.9, 0.0], [0.0, 0.8]])]
    rows, classes, _ = select_fcos_detections(boxes, cls2, ctr, 0.05, 100, 0.3, 100, plus_one=True)
    assert rows.tolist() == [0, 1] and classes.tolist() == [0, 1]


def test_select_thresh_with_ctr_thresholds_cls_times_ctr():
    boxes = [_far_boxes(3)]
    cls = [torch.tensor([[0.5], [0.06], [0.04]])]
    ctr = [torch.tensor([0.08, 1.0, 1.0])]
    # class probability alone: 0.5 and 0.06 pass 0.05, 0.04 does not
    rows, _, scores = select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 100)
    assert rows.tolist() == [1, 0]
    torch.testing.assert_close(scores, torch.tensor([0.06, 0.04]).sqrt())  # sqrt(cls * ctr)
    # cls * ctr: 0.5 x 0.08 = 0.04 <= 0.05 is dropped
    rows, _, scores = select_fcos_detections(boxes, cls, ctr, 0.05, 100, 0.6, 100, thresh_with_ctr=True)
    assert rows.tolist() == [1]
    torch.testing.assert_close(scores, torch.tensor([0.06]).sqrt())


def test_select_per_level_pre_nms_topk_and_row_offsets():
    boxes = [_far_boxes(3), _far_boxes(2) + 1000]
    cls = [torch.tensor([[0.3], [0.9], [0.6]]), torch.tensor([[0.2], [0.1]])]
    ctr = [torch.ones(3), torch.ones(2)]
    rows, _, scores = select_fcos_detections(boxes, cls, ctr, 0.05, 2, 0.6, 100)
    # level 0 keeps its 2 best (rows 1, 2), level 1 both (rows 3, 4 of the concatenation)
    assert rows.tolist() == [1, 2, 3, 4]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.6, 0.2, 0.1]).sqrt())


# ---------------------------------------------------------------- deformable ResNet


def stmask_dcn_blocks(num_blocks: int, interval: int) -> set[int]:
    """stmask spec 2.2, restated: ``dcn_layers = num_blocks`` (all blocks of the stage); block 0 is a
    DCN iff ``dcn_layers >= num_blocks``, block i >= 1 iff ``i + dcn_layers >= num_blocks`` and
    ``i % interval == 0``."""
    dcn_layers = num_blocks
    out = {0} if dcn_layers >= num_blocks else set()
    return out | {i for i in range(1, num_blocks) if i + dcn_layers >= num_blocks and i % interval == 0}


def _flagged(num_blocks: int, interval: int) -> set[int]:
    return {i for i, f in enumerate(deform_block_flags(num_blocks, interval)) if f}


def test_deform_block_flags_match_the_stmask_block_sets():
    # R-101 (res3, res4, res5 = 4, 23, 3 blocks), interval 3
    r101 = [_flagged(n, 3) for n in (4, 23, 3)]
    assert r101 == [{0, 3}, {0, 3, 6, 9, 12, 15, 18, 21}, {0}]
    assert sum(map(len, r101)) == 11
    # R-50 (4, 6, 3 blocks), interval 2
    r50 = [_flagged(n, 2) for n in (4, 6, 3)]
    assert r50 == [{0, 2}, {0, 2, 4}, {0, 2}]
    assert sum(map(len, r50)) == 7
    assert [_flagged(n, 3) for n in (4, 6, 3)] == [{0, 3}, {0, 3}, {0}]  # R-50 before 2021-06-27
    assert all(deform_block_flags(5, 1))  # YOLACT++ R-50: every block
    for n in range(1, 30):
        for interval in range(1, 5):
            assert _flagged(n, interval) == stmask_dcn_blocks(n, interval), (n, interval)


@pytest.fixture(scope="module")
def stmask_r50():
    """A narrow R-50 with STMask's DCN layout: modulated DCNv2 with a bias on every 2nd block of
    res3-res5, stride in the 3x3 conv."""
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH = 50
    r.OUT_FEATURES = ["res3", "res4", "res5"]
    r.STRIDE_IN_1X1 = False
    r.DEFORM_ON_PER_STAGE = [False, True, True, True]
    r.DEFORM_INTERVAL = 2
    r.DEFORM_MODULATED = True
    r.DEFORM_BIAS = True
    # narrow widths keep it cheap on CPU; the block structure is that of R-50
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    r.RES2_OUT_CHANNELS = 32
    r.WIDTH_PER_GROUP = 8
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    torch.manual_seed(0)
    return build_resnet_deform_backbone(cfg, ShapeSpec(channels=3))


def test_resnet_deform_backbone_with_modulated_biased_dcn(stmask_r50):
    net = stmask_r50
    deform = {n for n, m in net.named_modules() if isinstance(m, DeformBottleneckBlock)}
    assert deform == {"res3.0", "res3.2", "res4.0", "res4.2", "res4.4", "res5.0", "res5.2"}
    plain = {n for n, m in net.named_modules() if type(m) is BottleneckBlock}
    assert plain == {f"res2.{b}" for b in range(3)} | {
        "res3.1",
        "res3.3",
        "res4.1",
        "res4.3",
        "res4.5",
        "res5.1",
    }
    for name in deform:
        block = net.get_submodule(name)
        p = block.conv2.in_channels
        assert type(block.conv2) is ModulatedDeformConv
        assert block.conv2.bias is not None and block.conv2.bias.shape == (p,)
        assert (block.conv2.bias == 0).all()  # zero-initialised
        # offsets (18) + mask logits (9), same stride as conv2, with bias, zero-initialised
        assert block.conv2_offset.weight.shape == (27, p, 3, 3) and block.conv2_offset.bias.shape == (27,)
        assert block.conv2_offset.stride == block.conv2.stride
        assert (block.conv2_offset.weight == 0).all()
    first = net.res3[0]
    assert first.conv2.stride == (2, 2) and first.conv1.stride == (1, 1)  # stride in the 3x3
    assert first.conv2_offset.stride == (2, 2)
    x = torch.randn(1, 3, 64, 64)
    out = net(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res3": (1, 64, 8, 8),
        "res4": (1, 128, 4, 4),
        "res5": (1, 256, 2, 2),
    }
    sum(v.square().sum() for v in out.values()).backward()
    assert net.res4[2].conv2_offset.weight.grad.abs().sum() > 0  # offsets and masks train
    assert net.res4[2].conv2.bias.grad is not None


def test_resnet_deform_backbone_block_matches_a_hand_bottleneck(stmask_r50):
    """Zero-initialised offset conv: conv2 is 0.5 x (plain 3x3 conv) + bias (sigmoid(0) masks)."""
    block = copy.deepcopy(stmask_r50.res4[2])
    x = torch.randn(1, block.in_channels, 4, 4)
    with torch.no_grad():
        block.conv2.bias.uniform_(-1, 1)
        y = torch.relu(block.conv1(x))
        c2 = 0.5 * torch.nn.functional.conv2d(y, block.conv2.weight, padding=1)
        y = torch.relu(block.conv2.norm(c2 + block.conv2.bias.view(1, -1, 1, 1)))
        expected = torch.relu(block.conv3(y) + x)
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Scale


def test_scale_shapes_and_forward():
    s = Scale()
    assert s.scale.shape == () and s.scale.item() == 1.0  # mmdet layout
    c = Scale(2.5, shape=(1,))
    assert c.scale.shape == (1,) and c.scale.dtype == torch.float32  # centermask2 / AdelaiDet layout
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(c(x), 2.5 * x)
    assert c(x).shape == x.shape
    c(x).sum().backward()
    torch.testing.assert_close(c.scale.grad, x.sum()[None])
    # a checkpoint of the same layout loads
    s.load_state_dict({"scale": torch.tensor(3.0)})
    torch.testing.assert_close(s(x), 3.0 * x)


# ---------------------------------------------------------------- checkpoint helpers


def test_strip_prefix():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    out = strip_prefix({"module.backbone.w": a, "head.b": b, "x.module.c": c})
    assert list(out) == ["backbone.w", "head.b", "x.module.c"]
    assert out["backbone.w"] is a
    assert list(strip_prefix({"model.x": a, "y": b}, "model.")) == ["x", "y"]


def test_rename_mb_fpn_key():
    assert rename_mb_fpn_key("backbone.fpn.fpn_inner2.weight") == "backbone.fpn_lateral3.weight"
    assert rename_mb_fpn_key("backbone.fpn.fpn_inner4.bias") == "backbone.fpn_lateral5.bias"
    assert rename_mb_fpn_key("backbone.fpn.fpn_layer4.weight") == "backbone.fpn_output5.weight"
    assert rename_mb_fpn_key("backbone.fpn.fpn_layer2.bias") == "backbone.fpn_output3.bias"
    assert rename_mb_fpn_key("backbone.fpn.top_blocks.p6.weight") == "backbone.top_block.p6.weight"
    assert rename_mb_fpn_key("backbone.fpn.top_blocks.p7.bias") == "backbone.top_block.p7.bias"
    for key in (
        "backbone.body.layer1.0.conv1.weight",
        "rpn.head.cls_tower.0.weight",
        "backbone.fpn.fpn_inner2.weight.extra",
        "module.backbone.fpn.fpn_inner2.weight",
    ):
        assert rename_mb_fpn_key(key) is None, key


def test_fold_frozen_bn_eps_keeps_the_eps_free_affine_transform():
    g = torch.Generator().manual_seed(0)
    c = 6
    bn = {
        "weight": torch.randn(c, generator=g),
        "bias": torch.randn(c, generator=g),
        "running_mean": torch.randn(c, generator=g),
        "running_var": torch.rand(c, generator=g) * 1e-3 + 1e-4,  # small: eps 1e-5 matters
    }
    sd = {f"backbone.body.layer1.0.bn1.{k}": v for k, v in bn.items()}
    sd.update({f"rpn.head.norm.{k}": v.clone() for k, v in bn.items()})  # outside the prefix
    before = {k: v.clone() for k, v in sd.items()}
    out = fold_frozen_bn_eps(sd, "backbone.")
    assert all(torch.equal(sd[k], before[k]) for k in sd)  # the input is not modified
    assert all(torch.equal(out[k], sd[k]) for k in sd if k.startswith("rpn."))
    assert torch.equal(out["backbone.body.layer1.0.bn1.bias"], bn["bias"])

    # maskrcnn-benchmark FrozenBatchNorm: x * w / sqrt(var) + (b - mean * w / sqrt(var))
    x = torch.randn(2, c, 3, 3, generator=g)
    scale = bn["weight"] / bn["running_var"].sqrt()
    expected = x * scale.view(1, c, 1, 1) + (bn["bias"] - bn["running_mean"] * scale).view(1, c, 1, 1)
    d2 = FrozenBatchNorm2d(c)  # eps 1e-5
    d2.load_state_dict(
        {k.removeprefix("backbone.body.layer1.0.bn1."): v for k, v in out.items() if "bn1" in k}
    )
    torch.testing.assert_close(d2(x), expected, rtol=1e-5, atol=1e-5)
    unfolded = FrozenBatchNorm2d(c)
    unfolded.load_state_dict(bn)
    assert not torch.allclose(unfolded(x), expected, rtol=1e-3, atol=1e-3)  # the fold is needed


# ---------------------------------------------------------------- training mappers and config


def test_build_train_mapper_by_name():
    cfg = get_cfg()
    assert cfg.INPUT.DATASET_MAPPER_NAME == "DatasetMapper"
    assert type(build_train_mapper(cfg)) is DatasetMapper
    assert "VideoClipMapper" in DATASET_MAPPER_REGISTRY

    import sipmask  # noqa: F401  (registers SSDDatasetMapper)
    from sipmask.data import SSDDatasetMapper

    cfg.INPUT.DATASET_MAPPER_NAME = "SSDDatasetMapper"
    cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN = [64, 96]
    mapper = build_train_mapper(cfg)
    assert type(mapper) is SSDDatasetMapper and mapper.size == (64, 96)

    cfg.INPUT.DATASET_MAPPER_NAME = "NoSuchMapper"
    with pytest.raises(KeyError) as err:
        build_train_mapper(cfg)
    message = err.value.args[0]
    assert "'NoSuchMapper'" in message and "\n" not in message
    assert "DatasetMapper" in message and "SSDDatasetMapper" in message  # the known names


def test_get_cfg_has_every_package_key_and_rejects_unknown_ones(tmp_path):
    cfg = get_cfg()
    for node in ("FCOS", "VOVNET", "SIPMASK", "ROI_MASKIOU_HEAD"):
        assert node in cfg.MODEL, node
    assert cfg.MODEL.FCOS.NUM_CLASSES == 80 and cfg.MODEL.VOVNET.CONV_BODY == "V-39-eSE"
    r = cfg.MODEL.RESNETS
    assert (r.DEFORM_INTERVAL, r.DEFORM_BIAS, r.DEFORM_MODULATED) == (1, False, False)
    assert cfg.INPUT.DATASET_MAPPER_NAME == "DatasetMapper"
    assert "SSD_AUGMENTATION" not in cfg.INPUT and "MOBILENET" not in cfg.MODEL
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"MODEL": {"FCOS": {"NMS_TH": 0.5}, "RESNETS": {"DEFORM_INTERVAL": 3}}}))
    cfg.merge_from_file(str(good))
    assert cfg.MODEL.FCOS.NMS_TH == 0.5 and cfg.MODEL.RESNETS.DEFORM_INTERVAL == 3
    for bad_keys in ({"MODEL": {"FCOS": {"NO_SUCH_KEY": 1}}}, {"INPUT": {"SSD_AUGMENTATION": True}}):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(bad_keys))
        with pytest.raises(KeyError):
            get_cfg().merge_from_file(str(bad))
