"""SipMask head, backbone blocks, losses and detection selection against hand-computed values and
plain reference implementations."""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torchvision.ops import deform_conv2d

from onestage.backbone import DeformBottleneckBlock, build_resnet_deform_backbone, deform_block_flags
from onestage.config import get_cfg
from onestage.fcos import select_fcos_detections
from onestage.layers import distance_to_boxes, fast_nms, multiclass_nms
from sipmask.modeling.crop_split import crop_split
from sipmask.modeling.head import FeatureAlign, SipMaskHead
from sipmask.modeling.losses import (
    box_iou_pairwise,
    giou_loss_benchmark,
    iou_loss_plus1,
    mask_alignment_loss,
    rescoring_loss,
    rescoring_targets,
)
from sipmask.modeling.meta_arch import gt_masks_on_grid, pre_nms_topk_locations


def _head(**kw):
    args = dict(input_shape=[ShapeSpec(channels=64, stride=s) for s in (8, 16, 32, 64, 128)], num_classes=3)
    args.update(kw)
    return SipMaskHead(**args)


# ---------------------------------------------------------------- feature alignment
def test_feature_align_is_a_plain_conv_at_init():
    torch.manual_seed(0)
    fa = FeatureAlign(64, deform_groups=4, use_norm=False)
    x = torch.randn(2, 64, 9, 11)
    shape = torch.randn(2, 4, 9, 11)
    expected = F.relu(F.conv2d(x, fa.conv_adaption.weight, padding=1))
    torch.testing.assert_close(fa(x, shape), expected, rtol=1e-4, atol=1e-5)


def test_feature_align_offsets_are_a_linear_function_of_detached_boxes():
    torch.manual_seed(1)
    fa = FeatureAlign(64, deform_groups=4, use_norm=True)
    torch.nn.init.normal_(fa.conv_offset.weight, std=0.5)
    assert fa.conv_offset.weight.shape == (72, 4, 1, 1) and fa.conv_offset.bias is None
    x = torch.randn(1, 64, 7, 8)
    shape = torch.randn(1, 4, 7, 8, requires_grad=True)
    out = fa(x, shape)
    offset = torch.einsum("oc,nchw->nohw", fa.conv_offset.weight[:, :, 0, 0], shape.detach())
    ref = F.relu(fa.norm(deform_conv2d(x, offset, fa.conv_adaption.weight, padding=1)))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert shape.grad is None  # no gradient into the regression branch through the offsets


# ---------------------------------------------------------------- head
def test_head_output_shapes_and_names():
    torch.manual_seed(0)
    head = _head(num_convs=2, norm="GN").eval()
    feats = [torch.randn(2, 64, 128 // s, 96 // s) for s in (8, 16, 32)]
    feats += [torch.randn(2, 64, 2, 2), torch.randn(2, 64, 1, 1)]
    out = head(feats)
    for level, f in enumerate(feats):
        hw = f.shape[-2:]
        assert out["cls_logits"][level].shape == (2, 3, *hw)
        assert out["bbox_reg"][level].shape == (2, 4, *hw)
        assert out["centerness"][level].shape == (2, 1, *hw)
        assert out["coeffs"][level].shape == (2, 128, *hw)
    assert out["basis"].shape == (2, 32, 64, 48)  # half of the 128 x 96 input
    assert (out["basis"] >= 0).all()
    names = {k for k, _ in head.named_parameters()}
    assert {
        "cls_convs.0.conv.weight",
        "cls_convs.0.gn.weight",
        "reg_convs.1.gn.bias",
        "scales.4.scale",
    } <= names
    assert "cls_convs.0.conv.bias" not in names and "cls_convs.1.conv.weight" not in names  # N-1 cls convs
    assert head.scales[0].scale.shape == ()
    torch.testing.assert_close(head.fcos_cls.bias, torch.full((3,), -math.log(99)))


def test_head_bias_switches():
    no_gn = {k for k, _ in _head(norm="").named_parameters()}
    assert "cls_convs.0.conv.bias" in no_gn and "feat_align.norm.weight" in no_gn
    assert "feat_align.conv_adaption.bias" not in no_gn
    bench = {k for k, _ in _head(tower_conv_bias=True, align_dcn_bias=True).named_parameters()}
    assert "reg_convs.3.conv.bias" in bench and "feat_align.conv_adaption.bias" in bench


def test_relu_regression_is_non_negative():
    torch.manual_seed(0)
    head = _head(reg_activation="relu")
    torch.nn.init.normal_(head.fcos_reg.weight, std=1.0)
    feats = [torch.randn(1, 64, 8 >> i or 1, 8 >> i or 1) for i in range(5)]
    assert all((t >= 0).all() for t in head(feats)["bbox_reg"])


def test_rescoring_net_spatial_sizes():
    head = _head(rescoring=True)
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for m in head.convs_scoring]
    scores = head.rescore(torch.rand(3, 272, 272))
    for h in hooks:
        h.remove()
    assert sizes == [135, 67, 33, 16, 7, 3]
    assert scores.shape == (3, 3) and (scores >= 0).all()
    assert head.rescore(torch.rand(0, 272, 272)).shape == (0, 3)


# ---------------------------------------------------------------- backbone
def test_deform_interval_three_on_r101():
    assert deform_block_flags(4, 3) == [True, False, False, True]
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 101
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    cfg.MODEL.RESNETS.DEFORM_INTERVAL = 3
    net = build_resnet_deform_backbone(cfg, ShapeSpec(channels=3))
    deform = sorted(n for n, m in net.named_modules() if isinstance(m, DeformBottleneckBlock))
    expected = ["res3.0", "res3.3", "res5.0"] + [f"res4.{b}" for b in range(0, 23, 3)]
    assert deform == sorted(expected) and len(deform) == 11
    blk = net.res3[0]
    assert blk.conv2_offset.weight.shape == (18, 128, 3, 3) and blk.conv2_offset.bias is not None
    assert blk.conv2.bias is None and blk.conv1.stride == (2, 2)  # caffe: stride on the 1x1
    out = net(torch.randn(1, 3, 64, 64))
    assert out["res3"].shape == (1, 512, 8, 8) and out["res5"].shape == (1, 2048, 2, 2)


# ---------------------------------------------------------------- losses
def test_iou_loss_plus1_hand_values():
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    # row 2: I = 1 x 1, A_p = 1, A_t = 9 -> IoU 1/9
    loss = iou_loss_plus1(pred, target, torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(loss, torch.tensor(3 * math.log(9) / 4))
    # clamped at 1e-6 for boxes that do not overlap at all
    far = iou_loss_plus1(
        torch.tensor([[-5.0, 0.0, -3.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0, 1.0]]), torch.ones(1)
    )
    torch.testing.assert_close(far, torch.tensor(-math.log(1e-6)))
    empty = iou_loss_plus1(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4), torch.zeros(0))
    assert empty.item() == 0 and empty.requires_grad


def test_giou_loss_benchmark_hand_values():
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert giou_loss_benchmark(target.clone(), target, torch.ones(1)).abs() < 1e-6
    # A_t = 4, A_p = 16, I = 4, U = 16, IoU = 5/17, C = 16 -> GIoU = 5/17
    loss = giou_loss_benchmark(torch.tensor([[2.0, 2.0, 2.0, 2.0]]), target, torch.tensor([2.0]))
    torch.testing.assert_close(loss, torch.tensor(2 * 12 / 17))


def test_box_iou_plus_one():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0]])
    torch.testing.assert_close(box_iou_pairwise(a, b), torch.tensor([50 / 150]))
    torch.testing.assert_close(box_iou_pairwise(a, b, plus_one=False), torch.tensor([36 / 126]))


def test_mask_alignment_loss_matches_plain_formula():
    torch.manual_seed(0)
    k, h, w = 4, 12, 14
    basis = torch.rand(k, h, w)
    coeffs = torch.randn(5, 4 * k, requires_grad=True)
    boxes = torch.tensor(
        [
            [1.0, 1.0, 7.5, 8.0],
            [3.0, 2.0, 12.0, 11.0],
            [0.5, 0.5, 1.0, 1.5],
            [-2.0, 4.0, 6.0, 15.0],
            [2.0, 2.0, 9.0, 9.0],
        ]
    )  # the third has area 0.5 and is filtered out
    gt_boxes = torch.tensor([[1.0, 1.0, 7.0, 7.0]] * 5)
    gt_masks = (torch.rand(5, h, w) > 0.4).float()
    probs = torch.tensor([0.9, 0.5, 0.7, 0.2, 0.6])
    loss, masks, keep = mask_alignment_loss(basis, coeffs, boxes, gt_boxes, gt_masks, probs)
    assert keep.tolist() == [0, 1, 3, 4] and masks.shape == (4, h, w)

    # plain re-statement of spec 2.5, one positive at a time
    ws, ls = [], []
    for i in keep.tolist():
        x1, y1, x2, y2 = boxes[i].tolist()
        gx1, gy1, gx2, gy2 = gt_boxes[i].tolist()
        iw = max(min(x2, gx2) - max(x1, gx1) + 1, 0)
        ih = max(min(y2, gy2) - max(y1, gy1) + 1, 0)
        inter = iw * ih
        iou = inter / ((x2 - x1 + 1) * (y2 - y1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - inter)
        ws.append(float(probs[i]) * iou)
        m = crop_split(basis, coeffs[i : i + 1], boxes[i : i + 1])[0]
        inside = torch.zeros(h, w)
        for y in range(h):
            for x in range(w):
                inside[y, x] = float(x1 <= x < x2 and y1 <= y < y2)
        t = gt_masks[i] * inside
        bce = -(t * torch.log(m.clamp(min=1e-44)).clamp(min=-100) + (1 - t) * torch.log1p(-m).clamp(min=-100))
        ls.append(bce.sum() / ((x2 - x1) * (y2 - y1)))
    n = len(ws)
    expected = sum(wi / (sum(ws) + 1e-4) * n * li for wi, li in zip(ws, ls)) / n
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert coeffs.grad[2].abs().sum() == 0 and coeffs.grad[0].abs().sum() > 0


def test_mask_alignment_loss_without_valid_positives_is_zero_with_graph():
    coeffs = torch.randn(2, 8, requires_grad=True)
    loss, masks, keep = mask_alignment_loss(
        torch.rand(2, 6, 6),
        coeffs,
        torch.tensor([[1.0, 1.0, 1.5, 1.5], [3.0, 3.0, 3.0, 9.0]]),
        torch.zeros(2, 4),
        torch.zeros(2, 6, 6),
        torch.ones(2),
    )
    assert loss.item() == 0 and loss.requires_grad and keep.numel() == 0 and masks.shape == (0, 6, 6)


def test_rescoring_targets_and_loss():
    masks = torch.zeros(2, 20, 20)
    masks[0, :10, :10] = 0.9  # 100 predicted pixels
    masks[1, :5, :5] = 0.3  # below the 0.4 threshold: empty prediction
    gt = torch.zeros(2, 20, 20)
    gt[0, :10, :20] = 1  # 200 gt pixels, 100 overlapping
    gt[1, :10, :10] = 1
    iou, wgt = rescoring_targets(masks, gt)
    torch.testing.assert_close(iou, torch.tensor([100 / 200.1, 0.0]))
    assert wgt.tolist() == [1.0, 0.0]  # IoU 0 <= 0.1 gets no weight
    loss = rescoring_loss(torch.tensor([0.7, 0.2]), iou, wgt)
    assert loss.item() == pytest.approx(10 * (0.7 - 100 / 200.1) ** 2 / 1.1, rel=1e-5)


def test_gt_masks_on_grid_needs_three_of_four_pixels():
    inst = Instances((4, 6))
    m = torch.zeros(1, 4, 6, dtype=torch.bool)
    m[0, 0:2, 0:2] = True  # 4/4 -> 1
    m[0, 0:2, 2] = True
    m[0, 0, 3] = True  # 3/4 -> 1
    m[0, 2:4, 4] = True  # 2/4 -> 0
    inst.gt_masks = BitMasks(m)
    grid = gt_masks_on_grid(inst, (8, 8))
    assert grid.shape == (1, 4, 4)
    assert grid[0].tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    poly = Instances((8, 8))
    poly.gt_masks = PolygonMasks([[[0, 0, 4, 0, 4, 4, 0, 4]]])
    assert gt_masks_on_grid(poly, (8, 8))[0, :2, :2].eq(1).all()


# ---------------------------------------------------------------- inference selection
def reference_fast_nms(boxes, scores, score_thresh, iou_thresh, top_k, max_dets):
    """Per-class Python loops restating YOLACT's Fast NMS."""
    dets = []
    for c in range(scores.shape[1]):
        order = scores[:, c].argsort(descending=True)[:top_k].tolist()
        for j_pos, j in enumerate(order):
            if scores[j, c] <= score_thresh:
                continue
            suppressed = False
            for i in order[:j_pos]:
                b1, b2 = boxes[i], boxes[j]
                iw = max(min(b1[2], b2[2]) - max(b1[0], b2[0]), 0)
                ih = max(min(b1[3], b2[3]) - max(b1[1], b2[1]), 0)
                inter = iw * ih
                union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
                if inter / union > iou_thresh:
                    suppressed = True
            if not suppressed:
                dets.append((float(scores[j, c]), j, c))
    dets.sort(key=lambda d: -d[0])
    return dets[:max_dets]


def test_fast_nms_suppresses_with_already_suppressed_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    rows, classes, s = fast_nms(boxes, scores, 0.1, 0.4, 200, 100)
    # box 1 overlaps box 0 by 0.43 -> out; box 2 overlaps box 1 by 0.43 -> out as well (Fast NMS),
    # although box 1 was suppressed and box 2 does not overlap box 0 by more than 0.4
    assert rows.tolist() == [0] and classes.tolist() == [0]


def test_fast_nms_matches_reference():
    torch.manual_seed(0)
    xy = torch.rand(60, 2) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2) * 30], dim=1)
    scores = torch.rand(60, 4) ** 2
    rows, classes, s = fast_nms(boxes, scores, 0.1, 0.5, top_k=25, max_dets=30)
    ref = reference_fast_nms(boxes.tolist(), scores, 0.1, 0.5, 25, 30)
    assert [(r, c) for _, r, c in ref] == list(zip(rows.tolist(), classes.tolist()))
    torch.testing.assert_close(s, torch.tensor([d[0] for d in ref]))
    r0, c0, s0 = fast_nms(torch.zeros(0, 4), torch.zeros(0, 4), 0.1, 0.5)
    assert r0.numel() == c0.numel() == s0.numel() == 0


def test_multiclass_nms_threshold_on_raw_class_prob_and_plus_one_iou():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0], [0.0, 0.0, 9.0, 9.0]])
    cls = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.04, 0.06]])
    ctr = torch.tensor([0.5, 1.0, 1.0])
    # continuous IoU of boxes 0 and 1 = 36/126 < 0.3 but "+1" IoU = 50/150 > 0.3
    rows, classes, scores = multiclass_nms(boxes, cls, ctr, 0.05, 0.3, 100, plus_one=True)
    assert rows.tolist() == [1, 2] and classes.tolist() == [0, 1]  # 0.04 on class 0 is dropped
    torch.testing.assert_close(scores, torch.tensor([0.8, 0.06]))
    rows, _, _ = multiclass_nms(boxes, cls, ctr, 0.05, 0.3, 100, plus_one=False)
    assert sorted(rows.tolist()) == [0, 1, 2]


def test_benchmark_selection_sqrt_score_and_per_level_topk():
    """SipMask-benchmark post-processing: the shared FCOS decoder with the "+1" box convention."""
    boxes = [torch.tensor([[0.0, 0.0, 5.0, 5.0], [20.0, 20.0, 30.0, 30.0]]), torch.tensor([[40.0, 0, 50, 9]])]
    cls = [torch.tensor([[0.5, 0.04], [0.3, 0.2]]), torch.tensor([[0.9, 0.0]])]
    ctr = [torch.tensor([0.5, 0.8]), torch.tensor([0.1])]
    rows, classes, scores = select_fcos_detections(boxes, cls, ctr, 0.05, 2, 0.6, 100, plus_one=True)
    # level 0 candidates: (0,c0) 0.25, (1,c0) 0.24, (1,c1) 0.16 -> top 2; level 1: (2,c0) 0.09
    assert sorted(zip(rows.tolist(), classes.tolist())) == [(0, 0), (1, 0), (2, 0)]
    torch.testing.assert_close(scores, torch.tensor([0.25, 0.24, 0.09]).sqrt())


def test_pre_nms_topk_and_decode():
    cls = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.3]])
    ctr = torch.tensor([0.1, 1.0, 1.0])
    assert pre_nms_topk_locations(cls, ctr, 2).tolist() == [1, 2]
    assert pre_nms_topk_locations(cls, ctr, 5).tolist() == [0, 1, 2]
    boxes = distance_to_boxes(torch.tensor([[10.0, 20.0]]), torch.tensor([[1.0, 2.0, 3.0, -4.0]]))
    assert boxes.tolist() == [[9.0, 18.0, 13.0, 16.0]]  # linear regression may invert boxes


def test_unknown_head_options_raise():
    with pytest.raises(ValueError, match="REG_ACTIVATION"):
        _head(reg_activation="exp")
    with pytest.raises(ValueError, match="norm"):
        _head(norm="BN")
