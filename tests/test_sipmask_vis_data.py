"""SipMask-VIS training pairs (spec sipmask_vis.md §4.1-4.2, §4.5) and the VIS configs."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from onestage.config import load_config
from onestage.data import build_train_mapper
from sipmask.data import RangeResize, SipMaskVISPairMapper, sample_pair

CONFIGS = Path("configs/SipMaskVIS")


def video(objects_per_frame: list[list[int]], files=None) -> dict:
    """A video dict whose frame t holds non-crowd objects with the track ids ``objects_per_frame[t]``."""
    annotations = [
        [{"id": i, "category_id": 0, "bbox": [10, 10, 20, 20], "bbox_mode": 1, "iscrowd": 0} for i in ids]
        for ids in objects_per_frame
    ]
    n = len(objects_per_frame)
    return {"video_id": 5, "file_names": files or [f"{t}.jpg" for t in range(n)], "height": 48, "width": 64,
            "annotations": annotations}  # fmt: skip


def test_pairs_query_and_reference_are_distinct_usable_frames():
    rng = np.random.RandomState(0)
    v = video([[1], [], [1, 2], [2], []])
    draws = [sample_pair(rng, v) for _ in range(600)]
    assert all(not alone and q != r and q in (0, 2, 3) and r in (0, 2, 3) for (q, r), alone in draws)
    pairs = {tuple(p) for p, _ in draws}
    assert pairs == {(0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2)}  # uniform: every ordered pair occurs
    counts = np.bincount([q for (q, _), _ in draws], minlength=4)[[0, 2, 3]]
    assert counts.min() > 150


def test_single_usable_frame_is_its_own_reference():
    rng = np.random.RandomState(0)
    assert sample_pair(rng, video([[], [4], []])) == ([1, 1], True)
    (q, r), alone = sample_pair(rng, video([[], []]))
    assert alone and q == r and q in (0, 1)


@pytest.fixture()
def two_frame_video(tmp_path) -> dict:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :20] = 255  # left part white: a flip is visible
    files = []
    for t in range(2):
        files.append(str(tmp_path / f"{t}.png"))
        cv2.imwrite(files[-1], img)
    v = video([[1, 2], [2]], files)
    for objs in v["annotations"]:
        for o in objs:
            o["segmentation"] = [[10, 10, 30, 10, 30, 30, 10, 30]]
    return v


def test_pair_mapper_shares_the_augmentation_and_orders_query_reference(two_frame_video, caplog):
    cfg = load_config(
        str(CONFIGS / "SipMaskVIS-synthetic.yaml"),
        [
            "INPUT.MIN_SIZE_TRAIN",
            "(24, 48)",
            "INPUT.MIN_SIZE_TRAIN_SAMPLING",
            "range",
            "INPUT.MAX_SIZE_TRAIN",
            "1000",
        ],
    )
    cfg.defrost()
    cfg.INPUT.MASK_FORMAT = "polygon"
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, SipMaskVISPairMapper)
    np.random.seed(0)
    flips, sizes = set(), set()
    for _ in range(20):
        out = mapper(two_frame_video)
        q, r = out["image"]
        assert torch.equal(q, r), "same scale and flip for both frames"
        flips.add(bool(q[0, 0, 0] == 255))
        sizes.add(tuple(q.shape))
        assert sorted(out["frame_indices"]) == [0, 1]
        qi, ri = out["instances"]
        assert qi.gt_ids.tolist() == ([1, 2] if out["frame_indices"][0] == 0 else [2])
        assert torch.equal(qi.gt_boxes.tensor[qi.gt_ids == 2], ri.gt_boxes.tensor[ri.gt_ids == 2])
    assert flips == {True, False} and len(sizes) > 3
    two_frame_video["annotations"][1] = []  # one usable frame left
    with caplog.at_level(logging.WARNING):
        out = mapper(two_frame_video)
    assert out["frame_indices"] == [0, 0] and "its own reference" in caplog.text


def test_range_resize_follows_the_mmdet_rule():
    aug = RangeResize((649, 960), (360, 480))
    image = np.zeros((720, 1280, 3), np.uint8)
    widths = set()
    for seed in range(100):
        np.random.seed(seed)
        long_limit, short_limit = np.random.randint(649, 961), np.random.randint(360, 481)
        s = min(long_limit / 1280, short_limit / 720)
        np.random.seed(seed)
        t = aug.get_transform(image)
        assert isinstance(t, T.ResizeTransform)
        assert (t.new_h, t.new_w) == (int(720 * s + 0.5), int(1280 * s + 0.5))
        assert t.new_h <= 480 and t.new_w <= 960
        widths.add(t.new_w)
    assert min(widths) <= 660 and max(widths) >= 840 and max(widths) <= 854  # 16:9 -> short limit binds
    with pytest.raises(ValueError, match="scale ranges"):
        RangeResize((960, 649), (360, 480))


@pytest.mark.parametrize(
    "name, classes, train, test",
    [
        ("sipmask_r50_caffe_fpn_gn_1x", 40, "ytvis_2019_train", "ytvis_2019_val"),
        ("sipmask_r50_caffe_fpn_gn_ms_1x", 40, "ytvis_2019_train", "ytvis_2019_val"),
        ("sipmask_r50_caffe_fpn_gn_1x_ytvis2021", 40, "ytvis_2021_train", "ytvis_2021_val"),
        ("sipmask_r50_caffe_fpn_gn_ms_1x_ytvis2021", 40, "ytvis_2021_train", "ytvis_2021_val"),
        ("sipmask_r50_caffe_fpn_gn_1x_ovis", 25, "ovis_train", "ovis_val"),
        ("sipmask_r50_caffe_fpn_gn_ms_1x_ovis", 25, "ovis_train", "ovis_val"),
        ("SipMaskVIS-synthetic", 3, "synthetic_vis_train", "synthetic_vis_val"),
    ],
)
def test_vis_configs(name, classes, train, test):
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text().startswith("VERSION: 2\n")
    cfg = load_config(str(path))
    c = cfg.MODEL.SIPMASK
    assert cfg.MODEL.META_ARCHITECTURE == "SipMaskVIS" and c.NUM_CLASSES == classes
    assert (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST) == ((train,), (test,))
    assert cfg.INPUT.DATASET_MAPPER_NAME == "SipMaskVISPairMapper"
    assert (c.INFERENCE_MODE, c.SCORE_THRESH_TEST, c.DETECTIONS_PER_IMAGE, c.MASK_THRESH) == (
        "fast_nms",
        0.03,
        10,
        0.5,
    )
    assert c.BOX_LOSS == "iou_plus1_pixels" and c.COEF_INIT_STD == 0.01
    mapper = SipMaskVISPairMapper(cfg, is_train=True)
    resize = mapper.augmentations.augs[0]
    if "_ms_" in name:
        assert (
            isinstance(resize, RangeResize)
            and resize.long_range == (649, 960)
            and resize.short_range == (360, 480)
        )
    elif name.startswith("sipmask"):
        assert (
            isinstance(resize, T.ResizeShortestEdge)
            and resize.short_edge_length == (360,)
            and resize.max_size == 640
        )
    if name.startswith("sipmask"):
        assert (c.NUM_CONVS, c.TRACK_DIM, c.TRACK_NUM_CONVS, cfg.SOLVER.BASE_LR) == (3, 512, 2, 0.005)
        assert (cfg.SOLVER.BIAS_LR_FACTOR, cfg.SOLVER.WEIGHT_DECAY_BIAS, cfg.SOLVER.WARMUP_ITERS) == (
            2.0,
            0.0,
            1000,
        )
        assert cfg.SOLVER.WARMUP_FACTOR == pytest.approx(1 / 80) and cfg.INPUT.MIN_SIZE_TEST == 360


def test_train_net_trains_pairs_and_evaluates_video_ap(tmp_path):
    """train_net.py: SipMaskVIS on synthetic_vis_tiny pairs, then video AP through the streaming runner."""
    from argparse import Namespace

    import train_net

    opts = [
        "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "('synthetic_vis_tiny',)", "DATASETS.TEST", "('synthetic_vis_tiny',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "80", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "80", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path),
    ]  # fmt: skip
    args = Namespace(
        config_file=str(CONFIGS / "SipMaskVIS-synthetic.yaml"), eval_only=False, resume=False, num_gpus=1,
        num_machines=1, machine_rank=0, dist_url="auto", opts=opts,
    )  # fmt: skip
    train_net.main(args)
    assert (tmp_path / "model_final.pth").is_file()
    metrics = (tmp_path / "metrics.json").read_text()
    assert "loss_match" in metrics
    assert (tmp_path / "inference" / "synthetic_vis_tiny" / "results.json").is_file()


def test_optimizer_gives_biases_twice_the_lr_and_no_weight_decay():
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    cfg = load_config(str(CONFIGS / "SipMaskVIS-synthetic.yaml"), ["MODEL.DEVICE", "cpu"])
    cfg.defrost()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.BIAS_LR_FACTOR, cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.005, 2.0, 0.0
    cfg.SOLVER.WEIGHT_DECAY_NORM = 1e-4
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for param, lr, wd in (
        (model.head.fcos_cls.bias, 0.01, 0.0),
        (model.head.feat_align.norm.bias, 0.01, 0.0),
        (model.head.sipmask_track.bias, 0.01, 0.0),
        (model.head.fcos_cls.weight, 0.005, 1e-4),
        (model.head.cls_convs[0].gn.weight, 0.005, 1e-4),
    ):
        assert (group_of[id(param)]["lr"], group_of[id(param)]["weight_decay"]) == (pytest.approx(lr), wd)
