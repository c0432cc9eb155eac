"""Test doubles for video inference: a deterministic "model" that returns ground truth, and a
tracker that reads the ground-truth track ids (so runner + results + evaluator can be checked
exactly, independently of any tracker or trained model); and the video tests' shared fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import BitMasks, Instances
from detectron2.tracking.base_tracker import BaseTracker


@pytest.fixture(autouse=True)
def single_thread():
    """Autouse in the modules that import it: per-frame inference is many small ops, intra-op
    threads only add contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_gt_frames(json_file: str | Path) -> dict[int, list[list[tuple[int, int, np.ndarray]]]]:
    """video id -> per frame: [(track id, contiguous class, bool mask (H, W))] straight from the JSON."""
    data = json.loads(Path(json_file).read_text())
    rank = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    out = {}
    for video in data["videos"]:
        frames = [[] for _ in range(video["length"])]
        for ann in data["annotations"]:
            if ann["video_id"] != video["id"]:
                continue
            for t, seg in enumerate(ann["segmentations"]):
                if seg is None:
                    continue
                rle = mask_util.frPyObjects(seg, video["height"], video["width"])
                frames[t].append((ann["id"], rank[ann["category_id"]], mask_util.decode(rle).astype(bool)))
        out[video["id"]] = frames
    return out


def gt_instances(objects: list[tuple[int, int, np.ndarray]], image_size: tuple[int, int]) -> Instances:
    inst = Instances(image_size)
    masks = (
        torch.from_numpy(np.stack([m for _, _, m in objects]))
        if objects
        else torch.zeros((0, *image_size), dtype=torch.bool)
    )
    inst.pred_masks = masks
    inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
    inst.pred_classes = torch.tensor([c for _, c, _ in objects], dtype=torch.int64)
    # deterministic per-track scores in (0.5, 1)
    inst.scores = torch.tensor([0.5 + 0.49 * ((i * 7919) % 101) / 100 for i, _, _ in objects])
    inst.gt_ids = torch.tensor([i for i, _, _ in objects], dtype=torch.int64)
    return inst


class OracleModel(torch.nn.Module):
    """Returns the ground truth of the frames in ``sequence`` ((video id, frame index) pairs), one per
    call, in order; checks that the input looks like a preprocessed frame of that video."""

    def __init__(self, gt: dict, sizes: dict[int, tuple[int, int]], sequence: list[tuple[int, int]]):
        super().__init__()
        self.gt, self.sizes, self.sequence = gt, sizes, list(sequence)
        self.calls = 0
        self.input_shapes: list[tuple[int, ...]] = []

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        assert not self.training and not torch.is_grad_enabled()
        (inputs,) = batched_inputs
        video_id, t = self.sequence[self.calls]
        self.calls += 1
        height, width = self.sizes[video_id]
        assert (inputs["height"], inputs["width"]) == (height, width)
        self.input_shapes.append(tuple(inputs["image"].shape))
        return [{"instances": gt_instances(self.gt[video_id][t], (height, width))}]


class GroundTruthTracker(BaseTracker):
    """``ID`` = the ground-truth track ids carried by :class:`OracleModel` outputs."""

    def update(self, instances: Instances) -> Instances:
        instances.ID = instances.gt_ids.tolist()
        return instances
