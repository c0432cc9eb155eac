"""Video AP end to end: streaming runner + association + YTVISEvaluator on the synthetic videos."""

import json
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances
from video_oracle import (
    GroundTruthAssociator,
    OracleModel,
    load_gt_frames,
    single_thread,  # noqa: F401 (an autouse fixture)
)

from vis_eval.runner import evaluate_video_dataset
from vis_eval.synthetic_video import register_synthetic_vis
from vis_eval.tracker import Associator

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET = "synthetic_vis_tiny"
ITERS = 80  # CenterMask-Lite training iterations (batch 4) for the image-model test


@pytest.fixture(scope="module")
def tiny():
    register_synthetic_vis()
    videos = DatasetCatalog.get(DATASET)
    meta = MetadataCatalog.get(DATASET)
    gt = load_gt_frames(meta.json_file)
    sizes = {v["video_id"]: (v["height"], v["width"]) for v in videos}
    sequence = [(v["video_id"], t) for v in videos for t in range(v["length"])]
    return videos, gt, sizes, sequence


def oracle_cfg():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 64
    return cfg


class OracleWithOwnAssociator(OracleModel):
    """A 'video model' exposing its own association (the SipMask-VIS / STMask hook)."""

    def build_associator(self) -> Associator:
        return GroundTruthAssociator()


class FreshIds(Associator):
    """No association at all: a new track id for every detection of every frame."""

    def reset(self) -> None:
        self.next = 0

    def __call__(self, output: dict) -> Instances:
        inst = output["instances"]
        inst.pred_ids = torch.arange(self.next, self.next + len(inst))
        self.next += len(inst)
        return inst


def test_ground_truth_through_the_pipeline_scores_100(tiny, tmp_path):
    _, gt, sizes, sequence = tiny
    model = OracleWithOwnAssociator(gt, sizes, sequence)
    results = evaluate_video_dataset(oracle_cfg(), model, DATASET, output_dir=str(tmp_path))
    segm = results["segm"]
    assert segm["AP"] == pytest.approx(100.0) and segm["AP75"] == pytest.approx(100.0)
    written = json.loads((tmp_path / "results.json").read_text())
    assert {r["category_id"] for r in written} <= {1, 2, 3}  # dataset ids
    assert model.calls == len(sequence)


def test_mask_iou_tracker_on_perfect_detections(tiny):
    _, gt, sizes, sequence = tiny
    tracked = evaluate_video_dataset(oracle_cfg(), OracleModel(gt, sizes, sequence), DATASET)["segm"]
    untracked = evaluate_video_dataset(
        oracle_cfg(), OracleModel(gt, sizes, sequence), DATASET, associator=FreshIds()
    )["segm"]
    # perfect masks: what is lost is lost by association (gaps longer than MAX_AGE, tracks that cross)
    assert 80.0 <= tracked["AP"] <= 100.0
    assert untracked["AP"] < 20.0 < tracked["AP"]


def test_image_model_with_tracker_gets_a_video_ap(tiny, tmp_path):
    """train_net.py evaluates a video dataset: CenterMask-Lite (briefly trained on the synthetic
    images) + the mask-IoU tracker on the synthetic videos."""
    from argparse import Namespace

    import train_net

    opts = [
        "DATASETS.TRAIN", "('synthetic_shapes_train',)", "DATASETS.TEST", "()", "SEED", "0",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(ITERS), "SOLVER.BASE_LR", "0.01",
        "SOLVER.WARMUP_ITERS", "100", "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "20", "OUTPUT_DIR", str(tmp_path),
    ]  # fmt: skip
    args = Namespace(
        config_file=str(REPO_ROOT / "configs/CenterMask/CenterMask-Lite-synthetic.yaml"),
        eval_only=False, resume=False, num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto", opts=opts,
    )  # fmt: skip
    cfg = train_net.setup(args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    cfg.defrost()
    cfg.DATASETS.TEST = (DATASET,)
    results = train_net.Trainer.test(cfg, trainer.model)
    ap = results["segm"]["AP"]
    print(f"CenterMask-Lite ({ITERS} iterations) + MaskIoUTracker on {DATASET}: {results['segm']}")
    assert 0.0 <= ap <= 100.0
    assert results["segm"]["AP50"] > 5.0  # it found and tracked objects (a broken pipeline gives 0)
    written = json.loads((tmp_path / "inference" / DATASET / "results.json").read_text())
    videos = {v["video_id"]: v["length"] for v in DatasetCatalog.get(DATASET)}
    assert all(len(r["segmentations"]) == videos[r["video_id"]] for r in written)
