"""End-to-end learning check of STMask: trained on 2-frame clips of 2 of the ``synthetic_vis_tiny``
videos, it must segment and track them (video AP on the same videos), which needs the matching, the
losses, the temporal fusion, the detections and the tracker to agree."""

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from learning import train_one_cycle

from onestage.config import load_config
from stmask.data import STMaskClipMapper
from vis_eval.data.synthetic_video import register_synthetic_vis
from vis_eval.evaluation.video_inference import evaluate_video_dataset

DATASET = "stmask_learning"  # the first 2 videos of synthetic_vis_tiny
ITERATIONS = 200
LR = 2e-3


def register_subset(num_videos: int = 2) -> list[dict]:
    register_synthetic_vis()
    if DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(DATASET, lambda: DatasetCatalog.get("synthetic_vis_tiny")[:num_videos])
        meta = MetadataCatalog.get("synthetic_vis_tiny").as_dict()
        for key in ("name", "json_file"):  # ground truth from the dataset dicts, not the tiny json
            meta.pop(key, None)
        MetadataCatalog.get(DATASET).set(**meta)
    return DatasetCatalog.get(DATASET)


def test_stmask_memorises_tiny_synthetic_videos(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)  # the clip sampling
    videos = register_subset()
    cfg = load_config(
        "configs/STMask/STMask-synthetic.yaml",
        ["MODEL.DEVICE", "cpu", "INPUT.RANDOM_FLIP", "none", "DATASETS.TEST", f"('{DATASET}',)"],
    )
    model = build_model(cfg)
    mapper = STMaskClipMapper(cfg, is_train=True)
    # every iteration: 2 random clips of every video
    train_seconds = train_one_cycle(model, lambda: [mapper(v) for v in videos * 2], ITERATIONS, LR)
    model.eval()
    results = evaluate_video_dataset(cfg, model, DATASET, str(tmp_path))
    segm = results["segm"]
    print(
        f"trained {ITERATIONS} iterations in {train_seconds:.0f}s; video AP {segm['AP']:.1f}, "
        f"AP50 {segm['AP50']:.1f}, AP75 {segm['AP75']:.1f}"
    )
    assert segm["AP50"] >= 90.0
    assert segm["AP"] >= 60.0
