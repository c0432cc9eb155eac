"""Shared pieces of the learning tests: a model memorises the 8 ``synthetic_shapes_tiny`` images."""

import time
from collections.abc import Callable

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.events import EventStorage

from vis_eval.data import synthetic


def tiny_dataset(name: str, root) -> list[dict]:
    """Generate the tiny synthetic set under ``root``, register it as ``name``, return its dicts."""
    json_file, image_root = synthetic.ensure_generated("tiny", root)
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(json_file), str(image_root))
    return DatasetCatalog.get(name)


def video_subset(name: str, num_videos: int = 2) -> list[dict]:
    """Register ``name`` as the first ``num_videos`` videos of ``synthetic_vis_tiny`` (ground truth from
    the dataset dicts, not the tiny json) and return their dicts."""
    from vis_eval.data.synthetic_video import register_synthetic_vis

    register_synthetic_vis()
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("synthetic_vis_tiny")[:num_videos])
        meta = MetadataCatalog.get("synthetic_vis_tiny").as_dict()
        for key in ("name", "json_file"):
            meta.pop(key, None)
        MetadataCatalog.get(name).set(**meta)
    return DatasetCatalog.get(name)


def model_inputs(dicts: list[dict], train: bool) -> list[dict]:
    """Model inputs at the images' own size, with ``instances`` (polygon masks) when ``train``."""
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


def train_one_cycle(
    model: torch.nn.Module, next_batch: Callable[[], list[dict]], iterations: int, lr: float
) -> float:
    """``iterations`` AdamW steps (one-cycle schedule peaking at ``lr``) on ``next_batch()``; returns
    the training time in seconds (the model is left in training mode)."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=iterations, pct_start=0.1
    )
    start = time.perf_counter()
    model.train()
    with EventStorage() as storage:
        for _ in range(iterations):
            losses = model(next_batch())
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            schedule.step()
            storage.step()
    return time.perf_counter() - start


def memorise_and_evaluate(
    model: torch.nn.Module, dicts: list[dict], evaluator: DatasetEvaluator, iterations: int, lr: float
) -> dict:
    """Train on all of ``dicts`` at once for ``iterations`` AdamW steps (one-cycle schedule peaking at
    ``lr``), then evaluate on the same images; prints the training time and the APs."""
    train_inputs = model_inputs(dicts, train=True)
    train_seconds = train_one_cycle(model, lambda: train_inputs, iterations, lr)
    model.eval()
    evaluator.reset()
    with torch.no_grad():
        for x in model_inputs(dicts, train=False):
            evaluator.process([x], model([x]))
    results = evaluator.evaluate()
    print(
        f"trained {iterations} iterations in {train_seconds:.0f}s; "
        f"segm AP {results['segm']['AP']:.1f}, bbox AP {results['bbox']['AP']:.1f}"
    )
    return results
