"""End-to-end learning check of STMask: trained on 2-frame clips of 2 of the ``synthetic_vis_tiny``
videos, it must segment and track them (video AP on the same videos), which needs the matching, the
losses, the temporal fusion, the detections and the tracker to agree."""

import numpy as np
import torch
from detectron2.modeling import build_model
from learning import train_one_cycle, video_subset

from onestage.config import load_config
from stmask.data import STMaskClipMapper
from vis_eval.evaluation.video_inference import evaluate_video_dataset

DATASET = "stmask_learning"  # the first 2 videos of synthetic_vis_tiny
ITERATIONS = 150
LR = 2e-3


def test_stmask_memorises_tiny_synthetic_videos(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)  # the clip sampling
    videos = video_subset(DATASET)
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
