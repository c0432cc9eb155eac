"""The video-model training contract: train_net.py feeds a video meta-architecture clips from the
clip mapper chosen by INPUT.DATASET_MAPPER_NAME."""

from argparse import Namespace
from pathlib import Path

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances
from torch import nn

import train_net

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(REPO_ROOT / "configs/CenterMask/CenterMask-Lite-synthetic.yaml")


@META_ARCH_REGISTRY.register()
class ClipContractProbe(nn.Module):
    """Records the batches it is trained on; its loss pulls one parameter towards the clip count."""

    batches: list = []

    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, batched_inputs: list[dict]) -> dict:
        ClipContractProbe.batches.append(batched_inputs)
        return {"loss_probe": (self.weight - len(batched_inputs)) ** 2}


def video_args(output_dir: Path, *opts: str) -> Namespace:
    overrides = [
        "MODEL.META_ARCHITECTURE", "ClipContractProbe", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", "('synthetic_vis_tiny',)", "DATASETS.TEST", "()",
        "INPUT.DATASET_MAPPER_NAME", "VideoClipMapper", "INPUT.SAMPLING_FRAME_NUM", "3",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(output_dir), *opts,
    ]  # fmt: skip
    return Namespace(
        config_file=CONFIG, eval_only=False, resume=False, num_gpus=1, num_machines=1,
        machine_rank=0, dist_url="auto", opts=overrides,
    )  # fmt: skip


def test_video_dataset_trains_on_clips(tmp_path):
    ClipContractProbe.batches.clear()
    train_net.main(video_args(tmp_path))
    assert len(ClipContractProbe.batches) == 2  # MAX_ITER
    for batch in ClipContractProbe.batches:
        assert len(batch) == 2  # IMS_PER_BATCH clips
        for clip in batch:
            assert len(clip["image"]) == len(clip["instances"]) == len(clip["frame_indices"]) == 3
            sizes = {tuple(img.shape) for img in clip["image"]}
            assert len(sizes) == 1, "every frame of a clip gets the same resize"
            (shape,) = sizes
            assert shape[0] == 3 and min(shape[1:]) == 64
            for img, inst in zip(clip["image"], clip["instances"]):
                assert isinstance(inst, Instances) and inst.image_size == tuple(img.shape[1:])
                assert inst.gt_ids.dtype == torch.int64 and len(inst.gt_ids) == len(inst.gt_boxes)
            assert clip["frame_indices"] == sorted(clip["frame_indices"])
    assert (tmp_path / "model_final.pth").is_file()


def test_video_dataset_with_an_image_mapper_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds videos: set INPUT.DATASET_MAPPER_NAME"):
        train_net.main(video_args(tmp_path, "INPUT.DATASET_MAPPER_NAME", "DatasetMapper"))


def test_unknown_mapper_name_is_refused(tmp_path):
    with pytest.raises(KeyError, match="NoSuchMapper"):
        train_net.main(video_args(tmp_path, "INPUT.DATASET_MAPPER_NAME", "NoSuchMapper"))
