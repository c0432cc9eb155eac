"""End-to-end learning check: CenterMask-Lite memorises 8 synthetic images (targets, losses and
inference must agree for the mask AP to get high)."""

import time

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from centermask import add_centermask_config
from centermask.evaluation import CenterMaskCOCOEvaluator
from vis_eval import synthetic

DATASET = "centermask_learning_tiny"
ITERATIONS = 200
LR = 2e-3


def _inputs(dicts: list[dict], train: bool) -> list[dict]:
    out = []
    for d in dicts:
        img = utils.read_image(d["file_name"], format="BGR")
        x = {
            "image": torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "image_id": d["image_id"],
        }
        x["height"], x["width"] = img.shape[:2]
        if train:
            annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
            instances = utils.annotations_to_instances(annos, img.shape[:2], mask_format="polygon")
            x["instances"] = utils.filter_empty_instances(instances)
        out.append(x)
    return out


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> list[dict]:
    json_file, image_root = synthetic.ensure_generated("tiny", tmp_path_factory.mktemp("shapes"))
    if DATASET not in DatasetCatalog.list():
        register_coco_instances(DATASET, {}, str(json_file), str(image_root))
    return DatasetCatalog.get(DATASET)


def _lite_cfg(num_classes: int):
    cfg = get_cfg()
    add_centermask_config(cfg)
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


def test_centermask_lite_memorises_tiny_synthetic_set(tiny_dataset):
    torch.manual_seed(0)
    model = build_model(_lite_cfg(len(MetadataCatalog.get(DATASET).thing_classes)))
    train_inputs = _inputs(tiny_dataset, train=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=ITERATIONS, pct_start=0.1
    )

    start = time.perf_counter()
    model.train()
    with EventStorage() as storage:
        for _ in range(ITERATIONS):
            losses = model(train_inputs)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            schedule.step()
            storage.step()
    train_seconds = time.perf_counter() - start

    model.eval()
    evaluator = CenterMaskCOCOEvaluator(DATASET, distributed=False)
    evaluator.reset()
    with torch.no_grad():
        for x in _inputs(tiny_dataset, train=False):
            evaluator.process([x], model([x]))
    results = evaluator.evaluate()
    print(
        f"trained {ITERATIONS} iterations in {train_seconds:.0f}s; segm AP {results['segm']['AP']:.1f}, bbox AP {results['bbox']['AP']:.1f}"
    )
    assert results["segm"]["AP"] >= 80.0
    assert results["bbox"]["AP"] >= 80.0
