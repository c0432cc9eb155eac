"""End-to-end learning check: CenterMask-Lite memorises 8 synthetic images (targets, losses and
inference must agree for the mask AP to get high)."""

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from learning import memorise_and_evaluate, tiny_dataset

from onestage.config import get_cfg
from onestage.evaluation import MaskScoreCOCOEvaluator

DATASET = "centermask_learning_tiny"


@pytest.fixture(scope="module")
def dicts(tmp_path_factory) -> list[dict]:
    return tiny_dataset(DATASET, tmp_path_factory.mktemp("shapes"))


def _lite_cfg(num_classes: int):
    cfg = get_cfg()
    cfg.merge_from_file("configs/CenterMask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    # From scratch (no ImageNet weights): trainable BatchNorm instead of FrozenBN.
    cfg.MODEL.VOVNET.NORM = "BN"
    cfg.MODEL.FCOS.NUM_CLASSES = cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    # Fewer RoIs per image (<= 4 foreground) keep the RoI heads cheap on CPU.
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.FCOS.POST_NMS_TOPK_TRAIN = 50
    return cfg


def test_centermask_lite_memorises_tiny_synthetic_set(dicts):
    torch.manual_seed(0)
    model = build_model(_lite_cfg(len(MetadataCatalog.get(DATASET).thing_classes)))
    evaluator = MaskScoreCOCOEvaluator(DATASET, distributed=False)
    results = memorise_and_evaluate(model, dicts, evaluator, iterations=200, lr=2e-3)
    assert results["segm"]["AP"] >= 80.0
    assert results["bbox"]["AP"] >= 80.0
