"""Video AP end to end: streaming runner + association + YTVISEvaluator on the synthetic videos."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances
from detectron2.tracking.base_tracker import BaseTracker
from video_oracle import (
    OracleModel,
    load_gt_frames,
    single_thread,  # noqa: F401 (an autouse fixture)
)

from vis_eval.config import add_vis_eval_config
from vis_eval.data.synthetic_video import register_synthetic_vis
from vis_eval.evaluation.video_inference import evaluate_video_dataset

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
    add_vis_eval_config(cfg)
    cfg.INPUT.MIN_SIZE_TEST = 64
    return cfg


class OracleVideoModel(OracleModel):
    """A 'video model' with its own association (the SipMask-VIS / STMask contract): ``reset_video()``
    at each video start, ``Instances.ID`` (here the ground-truth track ids) in its outputs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resets = 0

    def reset_video(self) -> None:
        self.resets += 1

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = super().forward(batched_inputs)
        outputs[0]["instances"].ID = outputs[0]["instances"].gt_ids.tolist()
        return outputs


class FreshIds(BaseTracker):
    """No association at all: a new track id for every detection of every frame."""

    def update(self, instances: Instances) -> Instances:
        instances.ID = list(range(self._id_count, self._id_count + len(instances)))
        self._id_count += len(instances)
        return instances


def test_ground_truth_through_the_pipeline_scores_100(tiny, tmp_path):
    _, gt, sizes, sequence = tiny
    model = OracleVideoModel(gt, sizes, sequence)
    results = evaluate_video_dataset(oracle_cfg(), model, DATASET, output_dir=str(tmp_path))
    segm = results["segm"]
    assert segm["AP"] == pytest.approx(100.0) and segm["AP75"] == pytest.approx(100.0)
    written = json.loads((tmp_path / "results.json").read_text())
    assert {r["category_id"] for r in written} <= {1, 2, 3}  # dataset ids
    assert model.calls == len(sequence) and model.resets == len(tiny[0])


FP_ID = 10**6


class EditedOracle(OracleVideoModel):
    """Ground truth without track ``drop_id``, plus a false-positive track (id ``FP_ID``, class
    ``fp_class``, score 1, above every gt track's) that is a 3 x 3 square in the top-left corner of
    every frame of video ``fp_video``."""

    def __init__(self, gt: dict, sizes: dict, sequence: list, drop_id: int, fp_video: int, fp_class: int):
        corner = np.zeros(sizes[fp_video], dtype=bool)
        corner[:3, :3] = True
        edited = {
            video: [
                [o for o in objects if o[0] != drop_id]
                + ([(FP_ID, fp_class, corner)] if video == fp_video else [])
                for objects in frames
            ]
            for video, frames in gt.items()
        }
        super().__init__(edited, sizes, sequence)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = super().forward(batched_inputs)
        inst = outputs[0]["instances"]
        inst.scores = torch.where(inst.gt_ids == FP_ID, torch.ones_like(inst.scores), inst.scores)
        return outputs


def test_known_ap_with_a_missed_track_and_a_top_scored_false_positive(tiny):
    """Hand-computed COCO-style video AP (101 recall points, IoU 0.5:0.95, mean over classes).

    * One of the n_c circle tracks is never predicted: precision 1 up to recall (n_c - 1)/n_c, then
      nothing, so AP_circle = #{r in {0, 0.01, ..., 1} : r <= (n_c - 1)/n_c} / 101.
    * A false triangle track outranks the n_t true ones: precision k/(k+1) at recall k/n_t, whose
      running max from the right is n_t/(n_t+1) at every recall point: AP_triangle = n_t/(n_t+1).
    * Squares are untouched: AP_square = 1 (at every IoU threshold, since the masks are exact).
    """
    _, gt, sizes, sequence = tiny
    tracks = {(i, c) for frames in gt.values() for objects in frames for i, c, _ in objects}
    n = {c: sum(1 for _, k in tracks if k == c) for c in (0, 1, 2)}  # circle, triangle, square
    drop_id = min(i for i, c in tracks if c == 0)
    fp_video = min(v for v, frames in gt.items() if any(c == 1 for objects in frames for _, c, _ in objects))
    # the corner square overlaps no triangle track of that video enough to match it (video IoU < 0.5)
    for track in {i for objects in gt[fp_video] for i, c, _ in objects if c == 1}:
        inter = union = 0
        for objects in gt[fp_video]:
            mask = next((m for i, _, m in objects if i == track), np.zeros(sizes[fp_video], dtype=bool))
            inter += int(mask[:3, :3].sum())
            union += int(mask.sum()) + 9 - int(mask[:3, :3].sum())
        assert inter / union < 0.5

    model = EditedOracle(gt, sizes, sequence, drop_id, fp_video, fp_class=1)
    segm = evaluate_video_dataset(oracle_cfg(), model, DATASET)["segm"]

    recall_points = np.linspace(0, 1, 101)
    ap_circle = 100 * np.sum(recall_points <= (n[0] - 1) / n[0]) / 101
    ap_triangle = 100 * n[1] / (n[1] + 1)
    assert (n[0], n[1], n[2]) == (7, 2, 5) and ap_circle == pytest.approx(100 * 86 / 101)
    assert segm["AP-circle"] == pytest.approx(ap_circle)
    assert segm["AP-triangle"] == pytest.approx(ap_triangle)
    assert segm["AP-square"] == pytest.approx(100.0)
    assert segm["AP"] == pytest.approx((ap_circle + ap_triangle + 100.0) / 3)


def test_mask_iou_tracker_on_perfect_detections(tiny):
    _, gt, sizes, sequence = tiny
    tracked = evaluate_video_dataset(oracle_cfg(), OracleModel(gt, sizes, sequence), DATASET)["segm"]
    untracked = evaluate_video_dataset(
        oracle_cfg(), OracleModel(gt, sizes, sequence), DATASET, make_tracker=FreshIds
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
    # it found and tracked objects (about 2.7 AP / 21 AP50 here; a broken pipeline gives 0 or NaN)
    assert ap > 1.0 and results["segm"]["AP50"] > 5.0
    # stricter IoU thresholds cannot add matches: AP (mean over 0.5:0.95) <= AP50; AP = class mean
    assert ap <= results["segm"]["AP50"]
    per_class = [results["segm"][f"AP-{c}"] for c in ("circle", "triangle", "square")]
    assert ap == pytest.approx(sum(per_class) / 3)
    # without association every detection is a one-frame track: far below the tracker's score
    untracked = evaluate_video_dataset(cfg, trainer.model, DATASET, make_tracker=FreshIds)["segm"]
    assert untracked["AP50"] < results["segm"]["AP50"] / 2
    written = json.loads((tmp_path / "inference" / DATASET / "results.json").read_text())
    videos = {v["video_id"]: v["length"] for v in DatasetCatalog.get(DATASET)}
    assert all(len(r["segmentations"]) == videos[r["video_id"]] for r in written)
