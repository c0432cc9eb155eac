"""FCOS pieces against hand-computed values: locations, target assignment, GIoU, post-processing."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, ImageList, Instances

from onestage.config import get_cfg
from onestage.fcos import (
    FCOS,
    centerness_targets,
    compute_locations,
    compute_locations_per_level,
    fcos_assign_targets,
    fcos_detections_single_image,
    level_size_ranges,
    per_location_stride_and_range,
)
from onestage.fcos.targets import INF
from onestage.layers import iou_loss


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- locations


def test_location_grid_is_row_major_with_half_stride_offset():
    locs = compute_locations_per_level(2, 3, 8)
    expected = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert locs.tolist() == expected
    assert locs.dtype == torch.float32
    levels = compute_locations([(1, 1)] * 5, [8, 16, 32, 64, 128])
    assert [lv.tolist() for lv in levels] == [[[4, 4]], [[8, 8]], [[16, 16]], [[32, 32]], [[64, 64]]]


def test_level_size_ranges_and_per_location_expansion():
    assert level_size_ranges([64, 128, 256, 512], 5) == [
        (-1, 64),
        (64, 128),
        (128, 256),
        (256, 512),
        (512, INF),
    ]
    with pytest.raises(ValueError):
        level_size_ranges([64], 3)
    strides, ranges = per_location_stride_and_range([2, 1], [8, 16], [64])
    assert strides.tolist() == [8, 8, 16]
    assert ranges.tolist() == [[-1, 64], [-1, 64], [64, INF]]


# ---------------------------------------------------------------- target assignment


def _grid(h: int, w: int, stride: int, lo: float = -1.0, hi: float = INF):
    locs = compute_locations_per_level(h, w, stride)
    strides = torch.full((len(locs),), float(stride))
    ranges = torch.tensor([[lo, hi]]).expand(len(locs), 2)
    return locs, strides, ranges


def _positives(t, locs) -> set[tuple[int, int]]:
    return {tuple(int(v) for v in locs[i]) for i in torch.nonzero(t.matched_idxs >= 0).squeeze(1).tolist()}


def test_center_sampling_region_clipped_to_box():
    locs, strides, ranges = _grid(8, 8, 8)
    box = torch.tensor([[8.0, 8.0, 56.0, 40.0]])  # center (32, 24); region +-12 -> (20, 12, 44, 36)
    t = fcos_assign_targets(locs, strides, ranges, box, torch.tensor([2]), background_label=5)
    assert _positives(t, locs) == {(28, 20), (36, 20), (28, 28), (36, 28)}
    i = locs.tolist().index([28.0, 20.0])
    assert t.reg_targets[i].tolist() == [20, 12, 28, 20]  # x - x1, y - y1, x2 - x, y2 - y, in pixels
    assert t.labels[i] == 2
    assert set(t.labels.tolist()) == {2, 5}
    assert (t.reg_targets[t.matched_idxs < 0] == 0).all()

    # A box thinner than the region: the region is clipped to the box, strictly-inside rule.
    thin = torch.tensor([[10.0, 0.0, 20.0, 64.0]])  # x in (10, 20): only x = 12
    t = fcos_assign_targets(locs, strides, ranges, thin, torch.tensor([0]), background_label=5)
    assert _positives(t, locs) == {(12, 28), (12, 36)}  # y strictly in (20, 44)


def test_without_center_sampling_every_location_strictly_inside_the_box():
    locs, strides, ranges = _grid(8, 8, 8)
    box = torch.tensor([[8.0, 8.0, 56.0, 40.0]])
    t = fcos_assign_targets(locs, strides, ranges, box, torch.tensor([1]), 5, center_sample_radius=0.0)
    expected = {(x, y) for x in (12, 20, 28, 36, 44, 52) for y in (12, 20, 28, 36)}
    assert _positives(t, locs) == expected
    # a location exactly on the border (distance 0) is not inside
    edge = torch.tensor([[12.0, 4.0, 40.0, 40.0]])  # x1 = 12 passes through locations x = 12
    t = fcos_assign_targets(locs, strides, ranges, edge, torch.tensor([1]), 5, center_sample_radius=0.0)
    assert all(x > 12 for x, _ in _positives(t, locs))


def test_size_range_is_inclusive_on_both_ends():
    box = torch.tensor([[8.0, 8.0, 56.0, 40.0]])
    # location (28, 20): (l, t, r, b) = (20, 12, 28, 20), max 28
    for lo, hi, positive in [(-1, 27.9, False), (-1, 28, True), (28, 64, True), (28.1, 64, False)]:
        locs, strides, ranges = _grid(8, 8, 8, lo, hi)
        t = fcos_assign_targets(locs, strides, ranges, box, torch.tensor([0]), 5)
        assert ((28, 20) in _positives(t, locs)) is positive, (lo, hi)


def test_smallest_area_wins_and_plus_one_convention_breaks_ties():
    locs = torch.tensor([[30.0, 30.0]])
    strides = torch.tensor([8.0])
    ranges = torch.tensor([[-1.0, INF]])
    a = [10.0, 10.0, 50.0, 50.0]  # 40 x 40
    b = [25.0, 20.0, 35.0, 40.0]  # 10 x 20
    t = fcos_assign_targets(locs, strides, ranges, torch.tensor([a, b]), torch.tensor([3, 4]), 9, 0.0)
    assert t.matched_idxs.tolist() == [1] and t.labels.tolist() == [4]
    assert t.reg_targets.tolist() == [[5, 10, 5, 10]]

    # Equal plain areas 10 x 40 = 20 x 20 = 400; with +1: 11 x 41 = 451 > 21 x 21 = 441.
    c = [25.0, 10.0, 35.0, 50.0]
    d = [20.0, 20.0, 40.0, 40.0]
    boxes, classes = torch.tensor([c, d]), torch.tensor([0, 1])
    plain = fcos_assign_targets(locs, strides, ranges, boxes, classes, 9, 0.0)
    plus_one = fcos_assign_targets(locs, strides, ranges, boxes, classes, 9, 0.0, area_plus_one=True)
    assert plain.matched_idxs.tolist() == [0]  # exact tie: first gt
    assert plus_one.matched_idxs.tolist() == [1]
    assert plus_one.reg_targets.tolist() == [[10, 10, 10, 10]]


def test_no_gt_gives_background_everywhere():
    locs, strides, ranges = _grid(4, 4, 8)
    t = fcos_assign_targets(locs, strides, ranges, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 7)
    assert t.labels.tolist() == [7] * 16
    assert t.matched_idxs.tolist() == [-1] * 16
    assert t.reg_targets.shape == (16, 4) and not t.reg_targets.any()


def test_gt_centered_at_x_zero_still_gets_positives():
    # centermask2 treats "first gt center x == 0" as "no gt" (spec 12.2 item 17); we do not.
    locs, strides, ranges = _grid(4, 4, 8)
    t = fcos_assign_targets(
        locs, strides, ranges, torch.tensor([[-20.0, 0.0, 20.0, 30.0]]), torch.tensor([0]), 1
    )
    assert (t.labels == 0).any()


def test_centerness_target():
    ctr = centerness_targets(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    assert torch.allclose(ctr, torch.tensor([math.sqrt(1 / 3 * 2 / 4), 1.0]))


# ---------------------------------------------------------------- IoU losses


def test_giou_loss_hand_computed():
    """AdelaiDet's (centermask2's) flavour as FCOS calls it: IoU = (I + 1) / (U + 1), no overlap clamp."""
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 0.0, 1.0], [2.0, 1.0, 3.0, 2.0]])
    target = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 2.0, 1.0], [2.0, 1.0, 3.0, 2.0]])
    # row 0: Ag 16, Ap 4, I 4, U 16, C 16 -> IoU (4+1)/(16+1)
    # row 1: Ag 9, Ap 6, I (1+0)*(1+1)=2, U 13, C (3+2)*(2+1)=15 -> IoU 3/14, GIoU 3/14 - 2/15
    # row 2: identical -> IoU 1, GIoU 1
    iou = torch.tensor([5 / 17, 3 / 14, 1.0])
    giou = torch.tensor([5 / 17, 3 / 14 - 2 / 15, 1.0])
    adelaidet = {"smooth": 1.0, "clamp_overlap": False}
    assert torch.allclose(iou_loss(pred, target, "giou", **adelaidet), 1 - giou)
    assert torch.allclose(iou_loss(pred, target, "iou", **adelaidet), -torch.log(iou))
    assert torch.allclose(iou_loss(pred, target, "linear_iou", **adelaidet), 1 - iou)
    with pytest.raises(ValueError):
        iou_loss(pred, target, "l1")


# ---------------------------------------------------------------- post-processing


def _level(probs: dict[tuple[int, int], float], hw: int, k: int, ctr: float = 0.5):
    """Logits (hw, k) with given class probabilities (others 0.001), centerness logits (hw,)."""
    logits = torch.full((hw, k), logit(0.001))
    for (loc, cls), p in probs.items():
        logits[loc, cls] = logit(p)
    return logits, torch.full((hw,), logit(ctr))


def test_postprocess_threshold_score_decode_and_order():
    locs = compute_locations_per_level(2, 2, 8)  # (4,4) (12,4) (4,12) (12,12)
    logits, ctr = _level({(0, 1): 0.9, (3, 0): 0.5, (1, 0): 0.04}, 4, 2, ctr=0.5)
    reg = torch.tensor([[0.5, 0.5, 1.0, 1.0], [1.0] * 4, [1.0] * 4, [0.25, 0.5, 0.75, 1.0]])
    res = fcos_detections_single_image([logits], [reg], [ctr], [locs], [8], (16, 16), 0.05, 1000, 0.6, 100)
    # prob 0.04 is below the 0.05 threshold (applied to the class probability alone)
    assert res.pred_classes.tolist() == [1, 0]
    assert torch.allclose(res.scores, torch.tensor([math.sqrt(0.9 * 0.5), math.sqrt(0.5 * 0.5)]))
    assert torch.allclose(
        res.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 12.0, 12.0], [10.0, 8.0, 18.0, 20.0]])
    )
    assert res.locations.tolist() == [[4, 4], [12, 12]]
    assert res.image_size == (16, 16)

    # with THRESH_WITH_CTR the threshold applies to cls * ctr: 0.5 * 0.5 passes 0.2, 0.9 * 0.5 too
    res = fcos_detections_single_image(
        [logits], [reg], [ctr], [locs], [8], (16, 16), 0.3, 1000, 0.6, 100, thresh_with_ctr=True
    )
    assert res.pred_classes.tolist() == [1]
    assert torch.allclose(res.scores, torch.tensor([math.sqrt(0.45)]))


def test_postprocess_class_aware_nms_and_pre_nms_topk():
    locs = compute_locations_per_level(1, 3, 8)  # (4,4) (12,4) (20,4)
    reg = torch.full((3, 4), 2.0)  # 32 x 32 boxes shifted by 8 px: IoU 24/40 = 0.6, 16/48 = 0.33
    logits, ctr = _level({(0, 0): 0.9, (1, 0): 0.8, (2, 1): 0.7}, 3, 2, ctr=1 - 1e-6)
    res = fcos_detections_single_image([logits], [reg], [ctr], [locs], [8], (32, 32), 0.05, 1000, 0.5, 100)
    assert res.locations[:, 0].tolist() == [4, 20]  # (12, 4) suppressed by (4, 4): IoU 0.6 > 0.5
    res = fcos_detections_single_image([logits], [reg], [ctr], [locs], [8], (32, 32), 0.05, 1000, 0.61, 100)
    assert res.locations[:, 0].tolist() == [4, 12, 20]
    # pre-NMS top-k is per level: with k = 1 each level keeps only its best candidate
    res = fcos_detections_single_image(
        [logits, logits], [reg, reg], [ctr, ctr], [locs, locs], [8, 8], (32, 32), 0.05, 1, 1.0, 100
    )
    assert res.scores.numel() == 2 and torch.allclose(
        res.scores, torch.full((2,), math.sqrt(0.9 * (1 - 1e-6)))
    )


def test_postprocess_post_nms_topk_keeps_ties():
    locs = compute_locations_per_level(1, 4, 64)  # far apart: no suppression
    reg = torch.full((4, 4), 0.1)
    logits, ctr = _level({(0, 0): 0.9, (1, 0): 0.6, (2, 0): 0.6, (3, 0): 0.3}, 4, 1)
    res = fcos_detections_single_image([logits], [reg], [ctr], [locs], [64], (64, 256), 0.05, 1000, 0.6, 2)
    assert res.locations[:, 0].tolist()[0] == 32
    assert len(res) == 3  # the 2nd and 3rd tie at the 2nd best score: both kept
    res = fcos_detections_single_image([logits], [reg], [ctr], [locs], [64], (64, 256), 0.05, 1000, 0.6, 1)
    assert len(res) == 1
    res = fcos_detections_single_image([logits], [reg], [ctr], [locs], [64], (64, 256), 0.05, 1000, 0.6, 0)
    assert len(res) == 4  # 0 disables the limit


def test_postprocess_no_candidates_gives_empty_instances():
    locs = compute_locations_per_level(2, 2, 8)
    logits, ctr = _level({}, 4, 3)
    res = fcos_detections_single_image(
        [logits], [torch.ones(4, 4)], [ctr], [locs], [8], (16, 16), 0.05, 10, 0.6, 5
    )
    assert len(res) == 0
    assert res.pred_boxes.tensor.shape == (0, 4) and res.locations.shape == (0, 2)


# ---------------------------------------------------------------- FCOS module


def _fcos(num_classes: int = 3, **overrides) -> FCOS:
    cfg = get_cfg()
    cfg.MODEL.FCOS.NUM_CLASSES = num_classes
    cfg.MODEL.FCOS.NUM_CLS_CONVS = 1
    cfg.MODEL.FCOS.NUM_BOX_CONVS = 1
    for k, v in overrides.items():
        setattr(cfg.MODEL.FCOS, k, v)
    shapes = {f"p{i}": ShapeSpec(channels=32, stride=2**i) for i in range(3, 8)}
    return FCOS(cfg, shapes)


def test_fcos_head_module_names_and_init():
    fcos = _fcos(num_classes=80)
    keys = set(fcos.state_dict())
    assert {
        "fcos_head.cls_tower.0.weight",
        "fcos_head.cls_tower.1.weight",
        "fcos_head.bbox_tower.0.bias",
    } <= keys
    assert {"fcos_head.cls_logits.weight", "fcos_head.bbox_pred.weight", "fcos_head.ctrness.bias"} <= keys
    assert {f"fcos_head.scales.{i}.scale" for i in range(5)} <= keys
    assert not any(k.startswith("fcos_head.share_tower") for k in keys)
    assert fcos.fcos_head.scales[0].scale.shape == (1,)
    assert torch.allclose(fcos.fcos_head.cls_logits.bias, torch.full((80,), -math.log(99)))


def test_fcos_loss_values_without_gt_and_on_perfect_predictions():
    torch.manual_seed(0)
    fcos = _fcos()
    feats = {f"p{i}": torch.randn(1, 32, max(2, 64 >> i), max(2, 64 >> i)) for i in range(3, 8)}
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    empty = Instances(
        (64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)
    )
    fcos.train()
    _, losses = fcos(images, feats, [empty])
    logits = torch.cat([x.flatten() for x in fcos.fcos_head(list(feats.values()))[0]])
    p = logits.sigmoid()
    # all-negative focal loss: sum of 0.75 * p^2 * -log(1 - p), normalised by max(num_pos, 1) = 1
    expected = (0.75 * p**2 * -torch.log1p(-p)).sum()
    assert torch.allclose(losses["loss_fcos_cls"], expected, rtol=1e-4)
    assert losses["loss_fcos_loc"] == 0 and losses["loss_fcos_ctr"] == 0

    # Targets: stride-normalised, one image, positives only inside the center region.
    gt = Instances(
        (64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])), gt_classes=torch.tensor([2])
    )
    locations = compute_locations([f.shape[-2:] for f in feats.values()], fcos.strides)
    labels, reg_targets = fcos.targets(locations, [gt])
    pos = labels[0] != 3
    assert pos.sum() == 4 and (labels[0][pos] == 2).all()  # (20|28, 20|28) on P3
    assert torch.allclose(reg_targets[0][pos][0], torch.tensor([12.0, 12.0, 20.0, 20.0]) / 8)


def test_fcos_inference_and_proposals_in_training():
    fcos = _fcos()
    feats = {f"p{i}": torch.randn(2, 32, max(2, 64 >> i), max(2, 64 >> i)) for i in range(3, 8)}
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (60, 50)])
    with torch.no_grad():
        fcos.fcos_head.cls_logits.bias.fill_(3.0)  # every location/class above threshold
    fcos.eval()
    dets, losses = fcos(images, feats)
    assert losses == {}
    assert [d.image_size for d in dets] == [(64, 64), (60, 50)]
    assert all(len(d) <= 100 for d in dets) and all(len(d) > 0 for d in dets)
    assert all((d.scores[:-1] >= d.scores[1:]).all() for d in dets)
    fcos.train()
    fcos.yield_proposals = True  # MODEL.MASK_ON
    gt = Instances(
        (64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])), gt_classes=torch.tensor([2])
    )
    proposals, losses = fcos(images, feats, [gt, gt])
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert len(proposals) == 2 and not proposals[0].pred_boxes.tensor.requires_grad
    fcos.yield_proposals = False
    proposals, _ = fcos(images, feats, [gt, gt])
    assert proposals is None
