"""End-to-end learning check of SipMask-VIS: trained on query / reference pairs of 2 of the
``synthetic_vis_tiny`` videos, it must segment and track them (video AP on the same videos), which
needs the targets, the image losses, ``loss_match``, the embeddings and the association to agree."""

import numpy as np
import torch
from detectron2.modeling import build_model
from learning import train_one_cycle, video_subset

from onestage.config import load_config
from sipmask.data import SipMaskVISPairMapper
from vis_eval.evaluation.video_inference import evaluate_video_dataset

DATASET = "sipmask_vis_learning"  # the first 2 videos of synthetic_vis_tiny
ITERATIONS = 900
LR = 4e-3


def test_sipmask_vis_memorises_tiny_synthetic_videos(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)  # the pair sampling
    videos = video_subset(DATASET)
    cfg = load_config(
        "configs/SipMaskVIS/SipMaskVIS-synthetic.yaml",
        ["MODEL.DEVICE", "cpu", "INPUT.RANDOM_FLIP", "none", "DATASETS.TEST", f"('{DATASET}',)"],
    )
    model = build_model(cfg)
    mapper = SipMaskVISPairMapper(cfg, is_train=True)
    # every iteration: a random query / reference pair of every video (more, smaller steps memorise
    # faster than 2 pairs per video in the same time: 85.6 AP after 900 steps vs 75.1 after 400, at LR 3e-3)
    train_seconds = train_one_cycle(model, lambda: [mapper(v) for v in videos], ITERATIONS, LR)
    model.eval()
    results = evaluate_video_dataset(cfg, model, DATASET, str(tmp_path))
    segm = results["segm"]
    print(
        f"trained {ITERATIONS} iterations in {train_seconds:.0f}s; video AP {segm['AP']:.1f}, "
        f"AP50 {segm['AP50']:.1f}, AP75 {segm['AP75']:.1f}"
    )
    assert segm["AP50"] >= 95.0  # every track found and followed
    # measured 83.4 (104 s of training on 2 idle cores), 81.7-84.5 over seeds 0-1 on 1 and 2 threads
    assert segm["AP"] >= 80.0
