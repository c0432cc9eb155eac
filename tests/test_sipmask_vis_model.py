"""SipMask-VIS model: tracking head, pair training losses (§4.3), streaming inference with ids, bad input."""

import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from video_inputs import frame_instances

from onestage.config import load_config
from sipmask.modeling import SipMaskTrackHead, SipMaskVIS
from vis_eval.data.synthetic_video import register_synthetic_vis
from vis_eval.video.runner import VideoRunner

CONFIG = "configs/SipMaskVIS/SipMaskVIS-synthetic.yaml"
SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "80"]


@pytest.fixture(scope="module")
def model() -> SipMaskVIS:
    torch.manual_seed(0)
    return build_model(load_config(CONFIG, SMALL))


@pytest.fixture(scope="module")
def tiny_videos() -> list[dict]:
    register_synthetic_vis()
    return DatasetCatalog.get("synthetic_vis_tiny")


def gt(boxes, ids, classes=None, size=(64, 64)) -> Instances:
    return frame_instances(boxes, ids, classes, size)


def pair(query: Instances, ref: Instances) -> dict:
    img = torch.randint(0, 255, (3, *query.image_size), dtype=torch.uint8)
    return {"image": [img, img.clone()], "instances": [query, ref]}


def test_vis_head_names_init_and_track_map(model):
    head = model.head
    assert isinstance(head, SipMaskTrackHead)
    keys = set(head.state_dict())
    assert {
        "track_convs.0.conv.weight",
        "track_convs.0.gn.weight",
        "sipmask_track.weight",
        "sipmask_track.bias",
    } <= keys
    assert len(head.cls_convs) == 1 and len(head.reg_convs) == 2  # NUM_CONVS 2 in the synthetic config
    # sipmask_track keeps PyTorch's default init (std 1/sqrt(3 fan_in)), the towers normal(0, 0.01)
    fan_in = head.sipmask_track.in_channels
    assert head.sipmask_track.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1)
    assert head.track_convs[0].conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert head.sip_cof.weight.std().item() == pytest.approx(0.01, rel=0.1)  # COEF_INIT_STD (§2.6)
    feats = [torch.randn(2, 64, 16 // 2**i, 20 // 2**i) for i in range(3)]
    assert head.track_map(feats).shape == (2, 128, 16, 20)


def test_vis_r50_head_follows_the_spec_table():
    cfg = load_config("configs/SipMaskVIS/sipmask_r50_caffe_fpn_gn_1x.yaml", ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.SIPMASK.NUM_CLASSES == 40 and cfg.MODEL.SIPMASK.INFERENCE_MODE == "fast_nms"
    head = SipMaskTrackHead(cfg, [type("S", (), {"channels": 256})()] * 5)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["cls_convs.1.conv.weight"] == (256, 256, 3, 3) and "cls_convs.2.conv.weight" not in shapes
    assert shapes["reg_convs.2.gn.weight"] == (256,) and "reg_convs.3.conv.weight" not in shapes
    assert (
        shapes["track_convs.1.conv.weight"] == (256, 256, 3, 3) and "track_convs.2.conv.weight" not in shapes
    )
    assert shapes["sipmask_track.weight"] == (512, 768, 1, 1) and shapes["fcos_cls.weight"] == (40, 256, 3, 3)
    assert shapes["sip_cof.weight"] == (128, 256, 3, 3)


def test_pair_training_losses_and_gradients(model, tiny_videos):
    from sipmask.data import SipMaskVISPairMapper

    cfg = load_config(
        CONFIG, ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "80"]
    )
    mapper = SipMaskVISPairMapper(cfg, is_train=True)
    batch = [mapper(v) for v in tiny_videos[:2]]
    model.train()
    model.head.fcos_reg.bias.data.fill_(2.0)  # predicted boxes of 4 strides: positives pass the area filter
    try:
        with EventStorage() as storage:
            losses = model(batch)
            total = sum(losses.values())
            total.backward()
            assert "match_acc" in storage.latest()
    finally:
        model.head.fcos_reg.bias.data.zero_()
        model.eval()
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness", "loss_mask", "loss_match"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_match"] > 0
    assert model.head.sipmask_track.weight.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_match_loss_is_the_hand_computed_cross_entropy(model):
    model.ref_jitter = 0.0
    try:
        d = 2
        query_track = torch.zeros(2, d, 4, 4)
        ref_track = torch.zeros(2, d, 4, 4)
        query_track[0, :, 1, 1] = torch.tensor([1.0, 2.0])  # centre (12, 12) -> cell (1, 1)
        query_track[0, :, 0, 3] = torch.tensor([0.5, -1.0])  # centre (27, 3) -> cell (0, 3)
        ref_track[0, :, 2, 0] = torch.tensor([1.0, 0.0])  # ref box 0 centre (4, 20)
        ref_track[0, :, 0, 2] = torch.tensor([0.0, 1.0])  # ref box 1 centre (20, 4)
        positives = [
            (
                torch.tensor([0, 1]),
                torch.tensor([[8.0, 8.0, 16.0, 16.0], [26.0, 0.0, 28.0, 6.0]]),
                torch.tensor([0, 1]),
            ),
            (torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
        ]
        # query gt 0 = track 7 (reference row 2 -> target 2), gt 1 = track 9 (absent -> 0)
        query_gt = [gt([[0, 0, 10, 10], [20, 0, 30, 8]], [7, 9]), gt([], [])]
        # BOX_PLUS_ONE False: ref centres are the plain box centres
        ref_gt = [gt([[0, 16, 8, 24], [16, 0, 24, 8]], [3, 7]), gt([], [])]
        loss = model.match_loss(query_track, ref_track, positives, query_gt, ref_gt)
    finally:
        model.ref_jitter = 0.05

    def ce(logits, target):
        logits = torch.tensor(logits)
        return float(torch.logsumexp(logits, 0) - logits[target])

    expected = (ce([0.0, 1.0, 2.0], 2) + ce([0.0, 0.5, -1.0], 0)) / 2 / 2  # mean over positives, / 2 images
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_query_without_ground_truth_and_empty_reference(model):
    model.train()
    batch = [pair(gt([], []), gt([], [])), pair(gt([[4, 4, 40, 40]], [1]), gt([], []))]
    with EventStorage():
        losses = model(batch)
    model.eval()
    assert all(torch.isfinite(v) for v in losses.values())


def test_non_pair_training_input_is_refused(model):
    model.train()
    try:
        with pytest.raises(ValueError, match="query / reference frame pairs"):
            model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "instances": gt([], [])}])
    finally:
        model.eval()


def test_streaming_inference_gives_ids_and_resets_per_video(model, tiny_videos):
    cfg = load_config(CONFIG, SMALL)
    model.head.fcos_cls.bias.data.fill_(2.0)  # random weights: make every location a detection
    try:
        runner = VideoRunner.from_config(cfg, model)
        for video in tiny_videos[:2]:
            frames = list(runner.stream(video["file_names"][:3]))
            first = frames[0].instances
            assert len(first) == 10 and first.ID == list(range(10))  # DETECTIONS_PER_IMAGE 10
            for f in frames:
                assert len(set(f.instances.ID)) == len(f.instances) and f.instances.pred_masks.shape[1:] == (
                    128,
                    160,
                )
        records = runner.run_video(
            tiny_videos[0]["file_names"][:3], video_id=11, category_map={0: 1, 1: 2, 2: 3}
        )
        assert records and {r["video_id"] for r in records} == {11} and len(records[0]["segmentations"]) == 3
        assert {r["category_id"] for r in records} <= {1, 2, 3}
    finally:
        model.head.fcos_cls.bias.data.fill_(-math.log(99))


def test_frames_without_detections(model, tiny_videos):
    model.head.fcos_cls.bias.data.fill_(-30.0)  # nothing above the score threshold
    try:
        runner = VideoRunner.from_config(load_config(CONFIG, SMALL), model)
        frames = list(runner.stream(tiny_videos[0]["file_names"][:2]))
        assert all(len(f.instances) == 0 and f.instances.ID == [] for f in frames)
        assert len(model.tracker) == 0
        assert runner.run_video(tiny_videos[0]["file_names"][:2], video_id=1) == []
    finally:
        model.head.fcos_cls.bias.data.fill_(-math.log(99))


def test_embeddings_are_taken_at_the_input_scale_box_centres(model):
    model.head.fcos_cls.bias.data.fill_(2.0)
    calls = []
    original = model.tracker.update

    def spy(instances, embeddings):
        calls.append((instances, embeddings))
        return original(instances, embeddings)

    model.tracker.update = spy
    try:
        model.reset_video()
        img = torch.as_tensor(np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8))
        with torch.no_grad():
            # output at 2x the input size: boxes are divided by 0.5, embeddings read back at input scale
            model([{"image": img, "height": 128, "width": 160}])
            preds = model.head(
                [
                    model.backbone(model.preprocess_image([{"image": img}]).tensor)[f]
                    for f in model.head_in_features
                ]
            )
    finally:
        del model.tracker.update
        model.head.fcos_cls.bias.data.fill_(-math.log(99))
    instances, embeddings = calls[0]
    centres = (instances.pred_boxes.tensor[:, :2] + instances.pred_boxes.tensor[:, 2:]) / 4  # input pixels
    x = (centres[:, 0] / 8).floor().long().clamp(0, 9)
    y = (centres[:, 1] / 8).floor().long().clamp(0, 7)
    assert torch.allclose(embeddings, preds["track"][0][:, y, x].t(), atol=1e-5)


def test_runner_memory_tool_runs_the_video_model_with_its_own_association(capsys):
    import json

    from tools.benchmark_runner_memory import main

    opts = ["MODEL.SIPMASK.SCORE_THRESH_TEST", "0.0", *SMALL[2:], "MODEL.SIPMASK.TRACK_MAX_AGE", "2"]
    args = ["--worker", "12", "--height", "64", "--width", "80", "--objects", "3", "--config-file", CONFIG]
    assert main([*args, "--opts", *opts]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["frames"] == 12 and row["model"] == "SipMaskVIS-synthetic.yaml" and row["tracks"] >= 10
