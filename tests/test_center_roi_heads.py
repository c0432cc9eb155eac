"""CenterROIHeads pieces: ratio level assignment, SAG-Mask, MaskIoU targets/loss, train/inference paths."""

import math

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from centermask.modeling.roi_heads import (
    CenterROIHeads,
    CenterROIPooler,
    MaskIoUHead,
    SpatialAttention,
    SpatialAttentionMaskHead,
    assign_boxes_to_levels_by_ratio,
    gt_mask_fraction_in_boxes,
    maskiou_loss,
    maskiou_targets,
)
from onestage.config import get_cfg

K = 3
C = 16


def square(x1, y1, x2, y2):
    return np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float64)


# ---------------------------------------------------------------- level assignment


def test_ratio_level_table():
    # image 100 x 100 = 10000 px; level = ceil(5 - log2(A_img / A_box)) clamped to [3, 5]
    areas = [0.0, 100.0, 2500.0, 2501.0, 5000.0, 5001.0, 10000.0, 40000.0]
    expected = [3, 3, 3, 4, 4, 5, 5, 5]
    boxes = Boxes(torch.tensor([[0.0, 0.0, a / 50.0, 50.0] for a in areas]))
    levels = assign_boxes_to_levels_by_ratio([boxes], [(100, 100)], 3, 5)
    assert (levels + 3).tolist() == expected
    # the un-padded size of each image counts: the same box is P3 in a big image, P5 in a small one
    box = Boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0]]))
    levels = assign_boxes_to_levels_by_ratio([box, box], [(200, 200), (50, 50)], 3, 5)
    assert levels.tolist() == [0, 2]


def test_pooler_uses_the_assigned_level():
    feats = [torch.full((1, 2, 64 >> i, 64 >> i), float(i + 1)) for i in range(3)]
    boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 60.0, 60.0]]))
    kwargs = dict(output_size=4, scales=(1 / 8, 1 / 16, 1 / 32), sampling_ratio=0, pooler_type="ROIAlignV2")
    ratio = CenterROIPooler(**kwargs, assign_crit="ratio")
    out = ratio(feats, [boxes], [(64, 64)])  # ratios 1/16, 0.39, 0.88 -> P3, P4, P5
    assert out.shape == (3, 2, 4, 4)
    assert out[:, 0, 1, 1].tolist() == [1.0, 2.0, 3.0]
    area = CenterROIPooler(**kwargs, assign_crit="area")  # FPN rule: all these small boxes -> P3
    assert area(feats, [boxes])[:, 0, 1, 1].tolist() == [1.0, 1.0, 1.0]
    empty = ratio(feats, [Boxes(torch.zeros(0, 4))], [(64, 64)])
    assert empty.shape == (0, 2, 4, 4)
    with pytest.raises(ValueError):
        CenterROIPooler(**kwargs, assign_crit="size")


# ---------------------------------------------------------------- SAG-Mask


def test_spatial_attention_uses_channel_mean_and_max():
    sam = SpatialAttention(3)
    x = torch.randn(2, 5, 6, 6)
    with torch.no_grad():
        sam.conv.weight.zero_()
    assert torch.allclose(sam(x), x * 0.5)  # sigmoid(0)
    with torch.no_grad():
        sam.conv.weight[0, 1, 1, 1] = 1.0  # centre tap on the max-pooled channel only
    assert torch.allclose(sam(x), x * torch.sigmoid(x.amax(dim=1, keepdim=True)))
    with torch.no_grad():
        sam.conv.weight.zero_()
        sam.conv.weight[0, 0, 1, 1] = 2.0  # centre tap on the mean channel
    assert torch.allclose(sam(x), x * torch.sigmoid(2 * x.mean(dim=1, keepdim=True)))
    assert sam.conv.bias is None


def test_mask_head_shapes_and_names():
    head = SpatialAttentionMaskHead(
        ShapeSpec(channels=C, height=14, width=14), num_classes=K, conv_dims=[8, 8]
    )
    assert head(torch.randn(5, C, 14, 14)).shape == (5, K, 28, 28)
    assert head(torch.randn(0, C, 14, 14)).shape == (0, K, 28, 28)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "mask_fcn1.weight": (8, C, 3, 3),
        "mask_fcn1.bias": (8,),
        "mask_fcn2.weight": (8, 8, 3, 3),
        "mask_fcn2.bias": (8,),
        "spatialAtt.conv.weight": (1, 2, 3, 3),
        "deconv.weight": (8, 8, 2, 2),
        "deconv.bias": (8,),
        "predictor.weight": (K, 8, 1, 1),
        "predictor.bias": (K,),
    }


def test_maskiou_head_shapes():
    head = MaskIoUHead(in_channels=C, resolution=14, num_classes=K, conv_dims=[8, 8])
    out = head(torch.randn(4, C, 14, 14), torch.rand(4, 1, 28, 28))
    assert out.shape == (4, K)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["maskiou_fcn1.weight"] == (8, C + 1, 3, 3)
    assert shapes["maskiou_fcn2.weight"] == (8, 8, 3, 3) and head.maskiou_fcn2.stride == (2, 2)
    assert shapes["maskiou_fc1.weight"] == (1024, 8 * 7 * 7)
    assert shapes["maskiou.weight"] == (K, 1024)


# ---------------------------------------------------------------- MaskIoU target and loss


def _fg(boxes, polygons, classes):
    inst = Instances((64, 64))
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_masks = PolygonMasks(polygons)
    inst.gt_classes = torch.tensor(classes)
    return inst


def test_maskiou_target_on_a_toy_polygon():
    # gt: square (10, 10)-(30, 30), area 400. Box (20, 10)-(40, 30) holds its right half -> ratio 0.5.
    # In the 28x28 crop the gt fills the left 14 columns: 392 px, i.e. 784 px for the whole gt.
    inst = _fg([[20, 10, 40, 30], [10, 10, 30, 30]], [[square(10, 10, 30, 30)]] * 2, [1, 1])
    assert torch.allclose(gt_mask_fraction_in_boxes([inst]), torch.tensor([0.5, 1.0]))
    gt = inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, 28)
    assert gt[0].sum() == 392 and gt[1].sum() == 784

    logits = torch.where(gt, 5.0, -5.0)  # predicts exactly the in-box gt
    # box 0: inter 392, union 392 + 784 - 392 = 784 -> 0.5; box 1: perfect -> 1
    assert torch.allclose(maskiou_targets([inst], logits, gt), torch.tensor([0.5, 1.0]))
    logits = torch.full((2, 28, 28), 1.0)  # predicts the whole box
    # box 0: inter 392, union 784 + 784 - 392 = 1176 -> 1/3; box 1: 784 / 784
    assert torch.allclose(maskiou_targets([inst], logits, gt), torch.tensor([1 / 3, 1.0]))
    logits = torch.full((2, 28, 28), -1.0)  # predicts nothing: target 0
    assert maskiou_targets([inst], logits, gt).tolist() == [0.0, 0.0]


def test_maskiou_fraction_with_a_box_outside_the_gt_and_multiple_polygons():
    two = [square(0, 0, 10, 10), square(20, 0, 30, 10)]  # 2 x 100 px
    inst = _fg([[0, 0, 15, 10], [40, 40, 50, 50]], [two, two], [0, 0])
    ratio = gt_mask_fraction_in_boxes([inst])
    assert torch.allclose(ratio, torch.tensor([0.5, 1e-10]))


def test_maskiou_fraction_with_bitmasks_matches_polygons():
    from detectron2.structures import BitMasks

    polygons = [[square(10, 10, 30, 30)], [square(0, 0, 10, 10), square(20, 0, 30, 10)]]
    boxes = [[20, 10, 40, 30], [0, 0, 15, 10]]
    poly = _fg(boxes, polygons, [0, 1])
    bits = _fg(boxes, [[square(0, 0, 1, 1)]] * 2, [0, 1])
    bits.gt_masks = BitMasks.from_polygon_masks(PolygonMasks(polygons), 64, 64)
    assert bits.gt_masks.tensor.sum() == 600
    assert torch.allclose(gt_mask_fraction_in_boxes([bits]), gt_mask_fraction_in_boxes([poly]))
    assert torch.allclose(gt_mask_fraction_in_boxes([bits]), torch.tensor([0.5, 0.5]))


def test_maskiou_canvas_size_uses_float32_box_differences():
    # gt: a 100 x 847.5 column; box (0, 1e-6)-(100, 100) lies inside it and the prediction fills the
    # box, so crop gt = pred = all 784 px and target = 784 / (784 / ratio) = ratio = A_in / A_full.
    gt_height = 847.5
    inst = _fg([[0.0, 1e-6, 100.0, 100.0]], [[square(0, 0, 100, gt_height)]], [0])
    box = np.asarray([0.0, 1e-6, 100.0, 100.0], dtype=np.float32)
    # centermask2 truncates float32 differences: 100 - 1e-6 rounds to 100.0 in float32 ...
    height, width = int(box[3] - box[1]), int(box[2] - box[0])
    assert (height, width) == (100, 100)
    assert int(box.astype(np.float64)[3] - box.astype(np.float64)[1]) == 99  # ... but not in float64
    # the whole height x width canvas is inside the gt (pycocotools counts every pixel)
    ratio = height * width / (100 * gt_height)
    assert round(ratio, 4) == 0.1180  # 99-row canvas: 9900 / 84750 = 0.1168
    assert gt_mask_fraction_in_boxes([inst]).item() == pytest.approx(ratio, rel=1e-6)
    gt = inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, 28)
    assert gt.sum() == 784
    target = maskiou_targets([inst], torch.ones((1, 28, 28)), gt)
    assert target.item() == pytest.approx(ratio, rel=1e-5) and round(target.item(), 4) == 0.1180


def test_maskiou_loss_only_on_positive_targets():
    pred = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.7, 0.7, 0.7]], requires_grad=True)
    classes = torch.tensor([1, 2, 0])
    targets = torch.tensor([0.5, 0.0, 1.0])  # the second RoI (target 0) is ignored
    loss = maskiou_loss(pred, classes, targets)
    expected = 0.5 * ((0.9 - 0.5) ** 2 + (0.7 - 1.0) ** 2) / 2
    assert torch.allclose(loss, torch.tensor(expected))
    zero = maskiou_loss(pred, classes, torch.zeros(3))
    assert zero == 0 and zero.requires_grad


# ---------------------------------------------------------------- CenterROIHeads


def _roi_heads(maskiou_on: bool = True) -> CenterROIHeads:
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.MASKIOU_ON = maskiou_on
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3", "p4", "p5"]
    cfg.MODEL.ROI_MASK_HEAD.NAME = "SpatialAttentionMaskHead"
    cfg.MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION = "ratio"
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 8
    shapes = {f"p{i}": ShapeSpec(channels=C, stride=2**i) for i in range(3, 6)}
    return CenterROIHeads(cfg, shapes)


def _features(n: int = 2):
    return {f"p{i}": torch.randn(n, C, 64 >> i, 64 >> i) for i in range(3, 6)}


def _detections(boxes, scores, classes, size=(64, 64)):
    det = Instances(size)
    det.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    det.scores = torch.tensor(scores, dtype=torch.float32)
    det.pred_classes = torch.tensor(classes, dtype=torch.int64)
    det.locations = torch.zeros(len(scores), 2)
    return det


def _gt(boxes, classes, size=(64, 64)):
    gt = Instances(size)
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    gt.gt_classes = torch.tensor(classes, dtype=torch.int64)
    gt.gt_masks = PolygonMasks([[square(*b)] for b in boxes])
    return gt


def test_proposals_are_detached_with_gt_appended_and_input_untouched():
    heads = _roi_heads()
    det = _detections([[0, 0, 10, 10]], [0.5], [2])
    det.pred_boxes.tensor.requires_grad_(True)
    gt = _gt([[4, 4, 20, 20]], [1])
    props = heads._to_proposals(det, gt)
    assert props.proposal_boxes.tensor.tolist() == [[0, 0, 10, 10], [4, 4, 20, 20]]
    assert not props.proposal_boxes.tensor.requires_grad
    assert props.scores[1].item() == pytest.approx(math.log((1 - 1e-10) / 1e-10))
    assert props.pred_classes.tolist() == [2, 1]
    assert det.has("pred_boxes") and not det.has("proposal_boxes")
    heads.append_gt = False  # PROPOSAL_APPEND_GT=False works (broken in centermask2)
    assert len(heads._to_proposals(det, gt)) == 1


def test_training_losses_with_and_without_gt():
    torch.manual_seed(0)
    heads = _roi_heads()
    heads.train()
    feats = _features(2)
    dets = [_detections([[6, 6, 30, 26], [40, 40, 50, 60]], [0.9, 0.3], [0, 1]), _detections([], [], [])]
    gts = [_gt([[5, 5, 30, 25], [40, 40, 52, 60]], [0, 2]), _gt([], [])]
    with EventStorage() as storage:
        _, losses = heads(None, feats, dets, gts)
        assert set(losses) == {"loss_mask", "loss_maskiou"}
        assert 0.6 < losses["loss_mask"].item() < 0.8  # ~log 2 at init (predictor std 0.001)
        sum(losses.values()).backward()
        assert heads.mask_head.predictor.weight.grad is not None
        # image 0: 2 detections matching at IoU >= 0.5 + 2 appended gt boxes = 4 fg; image 1: none
        assert storage.history("roi_head/num_fg_samples").latest() == 2.0  # mean over the 2 images

        # only images without any gt in the batch: losses are zero and still differentiable
        _, losses = heads(None, _features(1), [dets[0]], [gts[1]])
        assert losses["loss_mask"].item() == 0 and losses["loss_maskiou"].item() == 0
        sum(losses.values()).backward()


def test_inference_adds_masks_and_mask_scores():
    torch.manual_seed(0)
    heads = _roi_heads()
    heads.eval()
    dets = [_detections([[6, 6, 30, 26], [40, 40, 50, 60]], [0.9, 0.3], [0, 2]), _detections([], [], [])]
    with torch.no_grad():
        out, losses = heads(None, _features(2), dets)
    assert losses == {}
    assert out[0].pred_masks.shape == (2, 1, 28, 28) and out[1].pred_masks.shape == (0, 1, 28, 28)
    assert ((out[0].pred_masks >= 0) & (out[0].pred_masks <= 1)).all()
    assert out[0].mask_scores.shape == (2,) and out[1].mask_scores.shape == (0,)
    # (mask_scores values: test_mask_scores_are_score_times_class_iou); the empty image pools nothing
    pooled = heads._pool(_features(2), [d.pred_boxes for d in dets], dets)
    assert pooled.shape == (2, C, 14, 14)

    heads_no_iou = _roi_heads(maskiou_on=False).eval()
    dets = [_detections([[6, 6, 30, 26]], [0.9], [1])]
    with torch.no_grad():
        out, _ = heads_no_iou(None, _features(1), dets)
    assert out[0].has("pred_masks") and not out[0].has("mask_scores")


def test_mask_scores_are_score_times_class_iou():
    heads = _roi_heads().eval()
    feats = _features(1)
    det = _detections([[6, 6, 30, 26], [10, 10, 40, 40]], [0.8, 0.5], [2, 1])
    with torch.no_grad():
        heads.forward_with_given_boxes(feats, [det])
        pooled = heads._pool(feats, [det.pred_boxes], [det])
        ious = heads.maskiou_head(pooled, det.pred_masks)
    expected = torch.tensor([0.8 * ious[0, 2], 0.5 * ious[1, 1]])
    assert torch.allclose(det.mask_scores, expected)


def test_full_model_zero_detections_and_empty_gt_training():
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file("configs/CenterMask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.FCOS.NUM_CLASSES = cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    model = build_model(cfg)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    empty = _gt([], [], size=(64, 96))
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": empty}])
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_maskiou"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

    model.eval()
    model.proposal_generator.score_thresh = (0.05, 1.1)  # nothing can pass: zero detections
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 128, "width": 192}])
    inst = out["instances"]
    assert len(inst) == 0 and inst.image_size == (128, 192)
    assert inst.pred_boxes.tensor.shape == (0, 4)
    assert inst.scores.shape == (0,) and inst.pred_classes.shape == (0,)
    assert inst.pred_masks.shape == (0, 128, 192) and inst.mask_scores.shape == (0,)


# ---------------------------------------------------------------- evaluator


def test_evaluator_ranks_segm_by_mask_scores(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from onestage.evaluation import MaskScoreCOCOEvaluator

    name = "centermask_test_eval_toy"
    if name not in DatasetCatalog.list():
        anno = {
            "bbox": [8, 8, 16, 16],
            "bbox_mode": 1,
            "category_id": 0,
            "segmentation": [square(8, 8, 24, 24).tolist()],
        }
        DatasetCatalog.register(
            name,
            lambda: [{"file_name": "x.png", "image_id": 1, "height": 32, "width": 32, "annotations": [anno]}],
        )
        MetadataCatalog.get(name).set(thing_classes=["a"])

    good = torch.zeros(32, 32, dtype=torch.bool)
    good[8:24, 8:24] = True
    bad = torch.zeros(32, 32, dtype=torch.bool)
    bad[26:30, 0:4] = True
    inst = Instances((32, 32))
    inst.pred_boxes = Boxes(torch.tensor([[8.0, 8.0, 24.0, 24.0]] * 2))
    inst.scores = torch.tensor([0.4, 0.9])  # box scores rank the bad mask first ...
    inst.pred_classes = torch.tensor([0, 0])
    inst.pred_masks = torch.stack([good, bad])
    inst.mask_scores = torch.tensor([0.9, 0.1])  # ... mask scores rank the good one first

    def evaluate(instances):
        evaluator = MaskScoreCOCOEvaluator(name, distributed=False, output_dir=str(tmp_path))
        evaluator.reset()
        evaluator.process([{"image_id": 1}], [{"instances": instances}])
        return evaluator.evaluate()

    res = evaluate(inst)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] == pytest.approx(100.0)  # both boxes match; the duplicate is a FP after the TP
    plain = Instances((32, 32), **{k: v for k, v in inst.get_fields().items() if k != "mask_scores"})
    res = evaluate(plain)
    assert res["segm"]["AP"] == pytest.approx(50.0, abs=0.5)  # FP first, then TP: precision 1/2
