"""Every SipMask config builds, trains one iteration and infers on CPU; mask assembly order; bad input;
DefaultPredictor / Visualizer / AMP."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.visualizer import Visualizer

from onestage.config import get_cfg
from sipmask.modeling.crop_split import crop_split

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "SipMask"
OFFICIAL = [
    "sipmask_r50_caffe_fpn_gn_1x.yaml",
    "sipmask_r50_caffe_fpn_gn_ms_2x.yaml",
    "sipmask_r101_caffe_fpn_gn_ms_4x.yaml",
    "sipmask_r50_caffe_fpn_ssd_6x.yaml",
    "sipmask_r50_caffe_fpn_ssd_gn_10x.yaml",
    "sipmask_r101_caffe_fpn_ssd_6x.yaml",
    "sipmask_r101_caffe_fpn_ssd_gn_10x.yaml",
    "sipmask++_r101_caffe_fpn_ssd_6x.yaml",
    "sipmask++_r101_caffe_fpn_ssd_gn_10x.yaml",
    "sipmask_R_50_FPN_1x.yaml",
    "sipmask_R_101_FPN_ms_3x.yaml",
]
SYNTHETIC = "SipMask-synthetic.yaml"


def load_cfg(name: str, size: int = 64):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / name))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST:
        # keep the train/test size mismatch of the real-time configs, at a small scale
        cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN = [size + 32, size + 32]
        cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST = [size, size]
        cfg.INPUT.MIN_SIZE_TEST = 0
    else:
        cfg.INPUT.MIN_SIZE_TEST = size
        cfg.INPUT.MAX_SIZE_TEST = 2 * size
    return cfg


def make_input(h: int, w: int, boxes, classes, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    inst.gt_boxes = Boxes(boxes_t)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    masks = torch.zeros(len(boxes_t), h, w, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes_t.round().int().tolist()):
        masks[i, max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    inst.gt_masks = BitMasks(masks)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    return {"image": image, "instances": inst, "height": h, "width": w}


def exercise_heads(model) -> None:
    """Give the freshly initialised model non-degenerate boxes and confident scores, so that one
    iteration reaches the mask (and re-scoring) losses and inference has detections."""
    with torch.no_grad():
        model.head.fcos_reg.weight.zero_()  # boxes of 2 x 2 strides around every location
        model.head.fcos_reg.bias.fill_(1.0)
        model.head.fcos_cls.weight.zero_()  # every location scores sigmoid(2) x sigmoid(0) = 0.44
        model.head.fcos_cls.bias.fill_(2.0)
        model.head.fcos_centerness.weight.zero_()
        # without pretrained weights the no-norm configs' features explode: start the coefficients
        # at 0 so that the sub-masks are not saturated (and have gradients)
        model.head.sip_cof.weight.zero_()
        # stand-in for pretrained weights: residual branches start at 0 (no explosion through
        # 50 / 101 random frozen-BN blocks)
        for m in model.backbone.bottom_up.modules():
            if hasattr(m, "conv3") and isinstance(m.conv3.norm, FrozenBatchNorm2d):
                m.conv3.norm.weight.zero_()


def check_output(inst: Instances, h: int, w: int, max_dets: int, rescoring: bool) -> None:
    n = len(inst)
    assert inst.image_size == (h, w)
    assert 0 < n <= max_dets
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (n, h, w)
    assert inst.pred_boxes.tensor.shape == (n, 4) and torch.isfinite(inst.pred_boxes.tensor).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()
    assert inst.pred_classes.dtype == torch.int64
    assert inst.has("mask_scores") == rescoring
    if rescoring:
        assert inst.mask_scores.shape == (n,) and (inst.mask_scores >= 0).all()


@pytest.mark.parametrize("name", OFFICIAL + [SYNTHETIC])
def test_config_builds_trains_and_infers(name, monkeypatch):
    torch.manual_seed(0)
    cfg = load_cfg(name, size=256 if "++" in name else 64)
    model = build_model(cfg)
    exercise_heads(model)
    rescoring = cfg.MODEL.SIPMASK.RESCORING
    size = 256 if rescoring else 64
    model.train()
    batch = [make_input(size, size, [[4, 6, 40, 50], [20, 10, 60, 44]], [1, 2])]
    losses = model(batch)
    expected = {"loss_cls", "loss_bbox", "loss_centerness", "loss_mask"} | (
        {"loss_iou"} if rescoring else set()
    )
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    sum(losses.values()).backward()
    assert model.head.sip_cof.weight.grad.abs().sum() > 0
    if rescoring:
        assert model.head.mask_scoring.weight.grad.abs().sum() > 0
    opt.step()

    model.eval()
    # the predictor wraps this model: building a second model would double the CPU time
    monkeypatch.setattr("detectron2.engine.defaults.build_model", lambda _cfg: model)
    predictor = DefaultPredictor(cfg)
    assert predictor.model is model
    bgr = np.random.default_rng(0).integers(0, 256, (size - 8, size + 10, 3), dtype=np.uint8)
    out = predictor(bgr)["instances"]
    check_output(out, size - 8, size + 10, cfg.MODEL.SIPMASK.DETECTIONS_PER_IMAGE, rescoring)
    vis = Visualizer(bgr[:, :, ::-1], MetadataCatalog.get("__sipmask_test"))
    drawn = vis.draw_instance_predictions(out[:5].to("cpu")).get_image()
    assert drawn.shape == (size - 8, size + 10, 3)


def test_mask_crop_upsample_threshold_order():
    """§3.3: crop on the mask grid, bilinear upsample by 2 / scale to an explicit size, threshold at
    0.4, paste top-left into the output canvas."""
    cfg = load_cfg(SYNTHETIC)
    model = build_model(cfg).eval()
    k = model.head.num_basis
    hm, wm = 16, 16  # a 32 x 32 network input
    basis = torch.ones(k, hm, wm) / k
    coeffs = torch.zeros(1, 4 * k)
    logits = torch.tensor([0.0, 0.5, -2.0, -0.2])  # sigmoid: 0.5, 0.62, 0.12, 0.45
    coeffs[0] = logits.repeat_interleave(k)
    locations = torch.tensor([[12.0, 12.0]])
    distances = torch.tensor([[8.0, 6.0, 10.0, 12.0]])  # box (4, 6, 22, 24) in input pixels
    cls = torch.tensor([[0.0, 0.9, 0.0]])
    inst = model.inference_single(
        cls, torch.ones(1), distances, coeffs, basis, locations, [1], (32, 32), (45, 50)
    )
    assert len(inst) == 1 and inst.pred_classes.tolist() == [1]
    box = torch.tensor([[4.0, 6.0, 22.0, 24.0]])
    soft = crop_split(basis, coeffs, box / 2)[0]
    size = (int(16 * 2 / (32 / 45)), int(16 * 2 / (32 / 50)))  # (45, 50)
    up = F.interpolate(soft[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    expected = torch.zeros(45, 50, dtype=torch.bool)
    expected[: size[0], : size[1]] = (up > 0.4)[:45, :50]
    assert torch.equal(inst.pred_masks[0], expected)
    # 0.45 (BR quadrant) survives the 0.4 threshold, 0.12 (BL) does not
    assert expected.any() and (soft == torch.sigmoid(torch.tensor(-0.2))).any()
    scale = torch.tensor([32 / 50, 32 / 45, 32 / 50, 32 / 45])
    torch.testing.assert_close(inst.pred_boxes.tensor, box / scale)  # continuous boxes (no +1)


def test_plus_one_boxes_round_trip():
    """With BOX_PLUS_ONE the gt boxes become inclusive for training and outputs get x2 + 1."""
    cfg = load_cfg(SYNTHETIC)
    cfg.MODEL.SIPMASK.BOX_PLUS_ONE = True
    model = build_model(cfg).eval()
    inst = Instances((8, 8))
    inst.gt_boxes = Boxes(torch.tensor([[1.0, 2.0, 5.0, 7.0]]))
    assert model._gt_boxes(inst).tolist() == [[1.0, 2.0, 4.0, 6.0]]
    k = model.head.num_basis
    out = model.inference_single(
        torch.tensor([[0.9, 0.0, 0.0]]),
        torch.ones(1),
        torch.tensor([[8.0, 6.0, 40.0, 40.0]]),  # clipped to the inclusive x2, y2 = 31
        torch.zeros(1, 4 * k),
        torch.zeros(k, 16, 16),
        torch.tensor([[12.0, 12.0]]),
        [1],
        (32, 32),
        (32, 32),
    )
    assert out.pred_boxes.tensor.tolist() == [[4.0, 6.0, 32.0, 32.0]]


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = build_model(load_cfg(SYNTHETIC))
    exercise_heads(model)
    return model


def test_images_without_instances_train(small_model):
    small_model.train()
    batch = [make_input(64, 64, [], []), make_input(64, 64, [[8, 8, 40, 40]], [0])]
    losses = small_model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    only_empty = small_model([make_input(64, 64, [], [])])
    assert (
        only_empty["loss_mask"] == 0 and only_empty["loss_bbox"] == 0 and only_empty["loss_centerness"] == 0
    )
    assert only_empty["loss_cls"] > 0
    small_model.zero_grad(set_to_none=True)
    sum(only_empty.values()).backward()  # a graph even without positives
    # every trainable parameter is reached (DDP without find_unused_parameters)
    assert [n for n, p in small_model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_tiny_and_partly_outside_boxes_train(small_model):
    small_model.train()
    batch = [
        make_input(64, 64, [[30, 30, 30.5, 31], [10, 10, 11, 11]], [0, 1]),  # smaller than a mask cell
        make_input(64, 64, [[-20, -10, 20, 30], [50, 40, 90, 80]], [2, 0]),  # partly outside
    ]
    losses = small_model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0


def test_polygon_masks_and_fixed_size_resize(small_model):
    """Polygon gt masks and a fixed-size input (instances rescaled with the image)."""
    small_model.train()
    small_model.fixed_size_train = (64, 64)
    try:
        inp = make_input(48, 80, [[8, 8, 40, 40]], [1])
        inp["instances"].gt_masks = PolygonMasks([[np.array([8, 8, 40, 8, 40, 40, 8, 40], dtype=np.float64)]])
        losses = small_model([inp])
    finally:
        small_model.fixed_size_train = None
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0


def test_zero_detections(small_model):
    small_model.eval()
    with torch.no_grad():
        bias = small_model.head.fcos_cls.bias.clone()
        small_model.head.fcos_cls.bias.fill_(-50.0)
        try:
            out = small_model([{"image": torch.zeros(3, 64, 64), "height": 100, "width": 90}])[0]["instances"]
        finally:
            small_model.head.fcos_cls.bias.copy_(bias)
    assert len(out) == 0 and out.image_size == (100, 90)
    assert out.pred_masks.shape == (0, 100, 90) and out.pred_boxes.tensor.shape == (0, 4)
    assert out.scores.shape == (0,) and out.pred_classes.shape == (0,)


def test_clear_errors(small_model):
    small_model.train()
    inp = make_input(64, 64, [[8, 8, 40, 40]], [1])
    inp["instances"].remove("gt_masks")
    with pytest.raises(ValueError, match="gt_masks"):
        small_model([inp])
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        small_model([make_input(64, 64, [[8, 8, 40, 40]], [3])])
    with pytest.raises(ValueError, match="instances"):
        small_model([{"image": torch.zeros(3, 64, 64)}])
    small_model.eval()
    with pytest.raises(ValueError, match="channels"):
        small_model([{"image": torch.zeros(1, 64, 64)}])
    cfg = load_cfg(SYNTHETIC)
    cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST = [100, 100]
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model(cfg)
    cfg = load_cfg(SYNTHETIC)
    cfg.MODEL.SIPMASK.INFERENCE_MODE = "soft_nms"
    with pytest.raises(ValueError, match="INFERENCE_MODE"):
        build_model(cfg)


def test_cpu_amp_train_and_inference(small_model):
    small_model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = small_model([make_input(64, 64, [[8, 8, 40, 40]], [1])])
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    small_model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = small_model([{"image": torch.zeros(3, 64, 64), "height": 64, "width": 64}])[0]["instances"]
    assert out.pred_masks.dtype == torch.bool and out.pred_masks.shape[1:] == (64, 64)
