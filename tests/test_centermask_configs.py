"""Every CenterMask config: spec values, and one CPU training iteration + inference at a small size."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from detectron2.data import DatasetMapper
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from onestage.config import get_cfg

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "CenterMask"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("centermask_*.yaml"))


def load(name: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / name))
    return cfg


def test_all_shipped_configs_exist():
    expected = {
        *(f"centermask_V_{d}_eSE{dcn}_FPN_ms_3x.yaml" for d in (39, 57, 99) for dcn in ("", "_dcn")),
        *(
            f"centermask_lite_{b}_FPN_ms_4x.yaml"
            for b in ("V_19_eSE", "V_19_slim_eSE", "V_19_slim_dw_eSE", "V_39_eSE", "Mv2")
        ),
        *(f"centermask_{b}_FPN_ms_3x.yaml" for b in ("R_50", "R_101", "X_101")),
    }
    assert set(CONFIGS) == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_config_values_follow_spec(name):
    cfg = load(name)
    lite = "_lite_" in name
    m = cfg.MODEL
    assert m.META_ARCHITECTURE == "CenterMask"  # a GeneralizedRCNN (tests/test_fast_inference.py)
    assert m.PROPOSAL_GENERATOR.NAME == "FCOS" and m.ROI_HEADS.NAME == "CenterROIHeads"
    assert m.ROI_MASK_HEAD.NAME == "SpatialAttentionMaskHead" and m.ROI_MASK_HEAD.ASSIGN_CRITERION == "ratio"
    assert m.MASK_ON and m.MASKIOU_ON
    assert m.ROI_HEADS.IN_FEATURES == ["p3", "p4", "p5"]
    assert m.FCOS.IN_FEATURES == ["p3", "p4", "p5", "p6", "p7"] and m.FCOS.POST_NMS_TOPK_TEST == 50
    assert m.ROI_MASK_HEAD.POOLER_RESOLUTION == 14
    assert "?" not in m.WEIGHTS and m.WEIGHTS  # spec 12.1: no "?dl=1" query
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == 0.01
    width = 128 if lite else 256
    convs = 2 if lite else 4
    assert m.FPN.OUT_CHANNELS == width
    assert (m.FCOS.NUM_CLS_CONVS, m.FCOS.NUM_BOX_CONVS, m.FCOS.NUM_SHARE_CONVS) == (convs, convs, 0)
    assert (m.ROI_MASK_HEAD.NUM_CONV, m.ROI_MASK_HEAD.CONV_DIM) == (convs, width)
    assert (m.ROI_MASKIOU_HEAD.NUM_CONV, m.ROI_MASKIOU_HEAD.CONV_DIM) == (convs, width)
    if lite:
        assert cfg.SOLVER.STEPS == (300000, 340000) and cfg.SOLVER.MAX_ITER == 360000
        assert cfg.INPUT.MIN_SIZE_TRAIN == (580, 600) and cfg.INPUT.MAX_SIZE_TRAIN == 1000
        assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (600, 1000)
    else:
        assert cfg.SOLVER.STEPS == (210000, 250000) and cfg.SOLVER.MAX_ITER == 270000
        assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)
        assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)
    if "_V_" in name:
        body = name.split("centermask_")[1].split("_FPN")[0].removeprefix("lite_").replace("_dcn", "")
        assert m.VOVNET.CONV_BODY == body.replace("_", "-")
        assert m.BACKBONE.NAME == "build_fcos_vovnet_fpn_backbone" and m.BACKBONE.FREEZE_AT == 0
        assert m.VOVNET.OUT_FEATURES == m.FPN.IN_FEATURES == ["stage3", "stage4", "stage5"]
        assert cfg.SOLVER.CHECKPOINT_PERIOD == 10000
        dcn = "_dcn_" in name
        assert tuple(m.VOVNET.STAGE_WITH_DCN) == ((False, True, True, True) if dcn else (False,) * 4)
        assert m.VOVNET.WITH_MODULATED_DCN == dcn
    elif "Mv2" in name:
        assert m.BACKBONE.NAME == "build_fcos_mobilenetv2_fpn_backbone" and m.BACKBONE.FREEZE_AT == 0
        assert m.RESNETS.OUT_FEATURES == m.FPN.IN_FEATURES == ["res3", "res4", "res5"]
        assert cfg.SOLVER.CHECKPOINT_PERIOD == 10000
    else:
        assert m.BACKBONE.NAME == "build_fcos_resnet_fpn_backbone" and m.BACKBONE.FREEZE_AT == 2
        assert m.RESNETS.OUT_FEATURES == m.FPN.IN_FEATURES == ["res3", "res4", "res5"]
        assert m.RESNETS.DEPTH == (50 if "R_50" in name else 101)
        assert cfg.SOLVER.CHECKPOINT_PERIOD == 5000
        if "X_101" in name:
            assert (m.RESNETS.NUM_GROUPS, m.RESNETS.WIDTH_PER_GROUP, m.RESNETS.STRIDE_IN_1X1) == (
                32,
                8,
                False,
            )
            assert m.PIXEL_STD == [57.375, 57.120, 58.395]


def test_unknown_key_still_raises(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"_BASE_": str(CONFIG_DIR / "Base-CenterMask-VoVNet.yaml"), "MODEL": {"FCOS": {"NO_SUCH_KEY": 1}}}
        )
    )
    cfg = get_cfg()
    with pytest.raises(KeyError):
        cfg.merge_from_file(str(bad))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A 96 x 128 image with two polygon instances on disk, as a dataset dict."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    cv2.rectangle(img, (10, 12), (60, 50), (0, 0, 255), -1)
    tri = np.array([[70, 20], [120, 20], [95, 80]], np.int32)
    cv2.fillPoly(img, [tri], (0, 255, 0))
    path = tmp_path_factory.mktemp("img") / "a.png"
    cv2.imwrite(str(path), img)
    annos = [
        {
            "bbox": [10, 12, 50, 38],
            "bbox_mode": 1,
            "category_id": 0,
            "segmentation": [[10, 12, 60, 12, 60, 50, 10, 50]],
        },
        {
            "bbox": [70, 20, 50, 60],
            "bbox_mode": 1,
            "category_id": 5,
            "segmentation": [[70, 20, 120, 20, 95, 80]],
        },
    ]
    return {"file_name": str(path), "height": 96, "width": 128, "image_id": 0, "annotations": annos}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_one_iteration_and_infers(name, sample):
    torch.manual_seed(0)
    cfg = load(name)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    # Few RoIs keep the (256-channel, 80-class) mask and MaskIoU heads cheap on CPU.
    cfg.MODEL.FCOS.POST_NMS_TOPK_TRAIN = 8
    cfg.MODEL.FCOS.POST_NMS_TOPK_TEST = 4
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 8
    model = build_model(cfg)

    # Inference first: without pretrained weights, a step at BASE_LR can blow deep FrozenBN nets up.
    model.eval()
    with torch.no_grad():
        # Untrained: let every location pass and give it a non-empty box, so that masks are predicted.
        model.proposal_generator.score_thresh = (0.05, 0.0)
        model.proposal_generator.fcos_head.bbox_pred.bias.fill_(1.0)
        (out,) = model([DatasetMapper(cfg, is_train=False)(dict(sample))])
    inst = out["instances"]
    assert inst.image_size == (96, 128)
    assert 0 < len(inst) <= 8  # POST_NMS_TOPK_TEST 4 (ties may keep a few more)
    assert inst.pred_masks.shape == (len(inst), 96, 128) and inst.pred_masks.dtype == torch.bool
    assert inst.mask_scores.shape == inst.scores.shape == (len(inst),)
    assert torch.isfinite(inst.mask_scores).all()

    train_mapper = DatasetMapper(cfg, is_train=True)
    batch = [train_mapper(dict(sample)), train_mapper(dict(sample))]
    assert batch[0]["image"].shape[1:] == (64, 85)
    model.train()
    optimizer = build_optimizer(cfg, model)
    with EventStorage():
        losses = model(batch)
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_maskiou"}
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0
