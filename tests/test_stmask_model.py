"""STMask meta-architecture: every shipped config builds, trains one step and infers on two frames on
CPU at a small input size; the video-model contract (ids, reset per video); bad input."""

import math
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from video_inputs import frame_instances

from onestage.config import load_config
from stmask.modeling import STMask

CONFIGS = sorted(Path("configs/STMask").glob("STMask*.yaml"))
SYNTHETIC = "configs/STMask/STMask-synthetic.yaml"
SIZE = (64, 96)
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.STMASK.FIXED_INPUT_SIZE_TEST", f"[{SIZE[0]}, {SIZE[1]}]"]
LOSSES = {
    "loss_box",
    "loss_mask",
    "loss_conf",
    "loss_center",
    "loss_track",
    "loss_box_shift",
    "loss_mask_shift",
}


def frame_gt(boxes, ids, classes=None, size=SIZE) -> Instances:
    return frame_instances(boxes, ids, classes, size)


def clip(first: Instances, second: Instances, video_id: int = 1) -> dict:
    g = torch.Generator().manual_seed(video_id)
    img = torch.randint(0, 255, (3, *first.image_size), dtype=torch.uint8, generator=g)
    return {"image": [img, img.roll(2, dims=-1)], "instances": [first, second], "video_id": video_id}


def training_batch() -> list[dict]:
    return [
        clip(frame_gt([[10, 8, 40, 40], [50, 20, 90, 60]], [3, 4]), frame_gt([[12, 8, 42, 40]], [3]), 1),
        clip(frame_gt([[20, 10, 60, 50]], [3], [1]), frame_gt([[22, 12, 62, 52]], [3], [1]), 2),
    ]


def infer_two_frames(model: STMask) -> list[Instances]:
    model.eval()
    model.reset_video()
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 255, (3, 72, 128), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        return [model([{"image": frame, "height": 72, "width": 128}])[0]["instances"] for _ in range(2)]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_builds_trains_one_step_and_infers(config):
    torch.manual_seed(0)
    # Random weights under FrozenBN's identity statistics blow up through 50-101 blocks (the released
    # configs start from COCO weights): BN with batch statistics keeps this one step finite.
    cfg = load_config(
        str(config), SMALL + ["MODEL.RESNETS.NORM", "BN", "MODEL.STMASK.BN_TRAIN_FROM_ITER", "0"]
    )
    model = build_model(cfg)
    assert isinstance(model, STMask)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with EventStorage(0):
        losses = model(training_batch())
    assert set(losses) == (
        LOSSES if cfg.MODEL.STMASK.TEMPORAL_FUSION else LOSSES - {"loss_box_shift", "loss_mask_shift"}
    )
    total = sum(losses.values())
    assert math.isfinite(float(total.detach()))
    total.backward()
    optimizer.step()
    for inst in infer_two_frames(model):
        assert inst.image_size == (72, 128)
        assert inst.has("ID") and len(inst.ID) == len(inst)
        assert inst.pred_masks.shape[1:] == (72, 128)
        if len(inst):
            assert int(inst.pred_classes.max()) < cfg.MODEL.STMASK.NUM_CLASSES


@pytest.fixture(scope="module")
def synthetic_model() -> STMask:
    torch.manual_seed(0)
    return build_model(load_config(SYNTHETIC, SMALL))


def test_frames_without_objects_train(synthetic_model):
    model = synthetic_model.train()
    empty = frame_gt([], [])
    batch = [clip(empty, empty), clip(frame_gt([[10, 8, 40, 40]], [5]), empty, 2)]
    with EventStorage(0):
        losses = model(batch)
    total = sum(losses.values())
    assert math.isfinite(float(total.detach()))
    total.backward()


def test_training_needs_two_frame_clips(synthetic_model):
    model = synthetic_model.train()
    single = {"image": [torch.zeros(3, *SIZE, dtype=torch.uint8)], "instances": [frame_gt([], [])]}
    with pytest.raises(ValueError, match="2-frame clips"):
        model([single])


def test_training_needs_track_ids(synthetic_model):
    model = synthetic_model.train()
    batch = training_batch()
    inst = batch[0]["instances"][0]
    batch[0]["instances"][0] = Instances(
        inst.image_size, **{k: v for k, v in inst.get_fields().items() if k != "gt_ids"}
    )
    with pytest.raises(ValueError, match="gt_ids"):
        model(batch)


def test_non_finite_image_is_an_error(synthetic_model):
    model = synthetic_model.eval()
    frame = torch.full((3, *SIZE), math.nan)
    with pytest.raises(ValueError, match="STMask"):
        model([{"image": frame}])


def test_reset_video_restarts_ids(synthetic_model):
    first = infer_two_frames(synthetic_model)
    again = infer_two_frames(synthetic_model)
    assert [list(i.ID) for i in first] == [list(i.ID) for i in again]
    for inst in first:  # ids are memory indices: unique, >= 0
        assert len(set(inst.ID)) == len(inst.ID) and min(inst.ID, default=0) >= 0


def test_authors_bn_mode_switches_at_the_configured_iteration():
    torch.manual_seed(0)
    cfg = load_config(SYNTHETIC, SMALL + ["MODEL.STMASK.BN_TRAIN_FROM_ITER", "3"])
    model = build_model(cfg).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(p.requires_grad for bn in bns for p in bn.parameters())  # affine frozen
    stats = bns[0].running_mean.clone()
    with EventStorage(2):
        model(training_batch())
    assert not any(bn.training for bn in bns)  # running statistics before iteration 3
    assert torch.equal(bns[0].running_mean, stats)
    with EventStorage(3):
        model(training_batch())
    assert all(bn.training for bn in bns)  # batch statistics from iteration 3 on
    assert not torch.equal(bns[0].running_mean, stats)
