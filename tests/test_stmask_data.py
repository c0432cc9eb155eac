"""STMask training clips (spec stmask.md §3.1) and the STMask configs."""

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from onestage.config import load_config
from onestage.data import build_train_mapper
from stmask.data import (
    CV2ResizeTransform,
    FixedSizeResize,
    STMaskClipMapper,
    sample_stmask_clip,
    stmask_usable_frames,
)
from vis_eval.data.synthetic_video import register_synthetic_vis

CONFIGS = Path("configs/STMask")
SYNTHETIC = str(CONFIGS / "STMask-synthetic.yaml")


def test_clip_sampling_follows_the_offset_rule():
    usable = [0, 1, 3, 6, 7, 8, 12]
    # By hand: key uniform (1/7); its candidates are the usable frames at -2, -1, +1, +2:
    # 0 -> {1}, 1 -> {0, 3}, 3 -> {1}, 6 -> {7, 8}, 7 -> {6, 8}, 8 -> {6, 7}, 12 -> {} (itself twice).
    expected = {(0, 1): 3, (1, 3): 3, (6, 7): 2, (6, 8): 2, (7, 8): 2, (12, 12): 2}  # in 14ths
    rng = np.random.RandomState(0)
    n = 14000
    counts = Counter(tuple(sample_stmask_clip(rng, usable)) for _ in range(n))
    assert set(counts) == set(expected)
    for pair, k in expected.items():
        assert counts[pair] / n == pytest.approx(k / 14, abs=0.015), pair
    generator = np.random.default_rng(1)  # a Generator works as well
    for _ in range(50):
        a, b = sample_stmask_clip(generator, usable)
        assert a <= b and (b - a in (1, 2) or a == b == 12)
    assert sample_stmask_clip(rng, [4]) == [4, 4]
    assert sample_stmask_clip(rng, [2, 5]) in ([2, 2], [5, 5])  # 3 apart: both alone
    assert sample_stmask_clip(rng, []) is None


def obj(track: int, box, **extra) -> dict:
    return {"id": track, "category_id": 1, "bbox": list(box), "bbox_mode": 1, "iscrowd": 0, **extra}


def test_usable_frames_need_a_non_crowd_object_of_at_least_one_pixel():
    video = {
        "annotations": [
            [obj(1, (0, 0, 5, 5), iscrowd=1)],  # crowd only
            [obj(1, (0, 0, 0.5, 5))],  # narrower than 1 px (the authors' parser skips it)
            [obj(1, (0, 0, 5, 0.9)), obj(2, (1, 1, 1, 1))],
            [],
            [obj(3, (2, 2, 4, 4))],
        ]
    }
    assert stmask_usable_frames(video) == [2, 4]


def test_cv2_resize_transform():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (48, 64, 3)).astype(np.uint8)
    t = FixedSizeResize((20, 100)).get_transform(image)
    assert isinstance(t, CV2ResizeTransform)
    assert np.array_equal(t.apply_image(image), cv2.resize(image, (100, 20), interpolation=cv2.INTER_LINEAR))
    # Detectron2's PIL resize antialiases when shrinking: not the authors' (mmcv / OpenCV) bilinear
    assert not np.array_equal(t.apply_image(image), T.ResizeTransform(48, 64, 20, 100).apply_image(image))
    mask = rng.rand(48, 64) > 0.5
    out = t.apply_segmentation(mask)
    assert out.dtype == bool and out.shape == (20, 100)
    # OpenCV nearest: source pixel floor(dst * src / dst_size)
    rows, cols = (np.arange(20) * 48 / 20).astype(int), (np.arange(100) * 64 / 100).astype(int)
    assert np.array_equal(out, mask[rows][:, cols])
    gray = image[:, :, :1]
    assert t.apply_image(gray).shape == (20, 100, 1)
    boxes = t.apply_box(np.array([[6.4, 4.8, 32.0, 48.0]]))
    assert np.allclose(boxes, [[10.0, 2.0, 50.0, 20.0]])
    assert np.allclose(t.inverse().apply_box(boxes), [[6.4, 4.8, 32.0, 48.0]])


@pytest.fixture()
def video(tmp_path) -> dict:
    """4 frames of 48 x 64 with different content; frame 2 has no object; RLE masks."""
    rng = np.random.RandomState(3)
    files, annotations = [], []
    for t in range(4):
        img = rng.randint(0, 256, (48, 64, 3)).astype(np.uint8)
        files.append(str(tmp_path / f"{t}.png"))
        cv2.imwrite(files[-1], img)
        objs = []
        if t != 2:
            for track, (x, y, w, h) in ((7, (5 + t, 6, 13, 17)), (9, (30, 20 + t, 21, 11))):
                m = np.zeros((48, 64), np.uint8)
                m[y : y + h, x : x + w] = 1
                m[y, x] = 0  # not a plain rectangle
                rle = mask_util.encode(np.asfortranarray(m))
                objs.append(obj(track, (x, y, w, h), segmentation=rle))
        annotations.append(objs)
    return {"video_id": 11, "file_names": files, "height": 48, "width": 64, "annotations": annotations}


def small_mapper() -> STMaskClipMapper:
    cfg = load_config(SYNTHETIC, ["MODEL.STMASK.FIXED_INPUT_SIZE_TRAIN", "[40, 96]"])
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, STMaskClipMapper)
    return mapper


def test_mapper_resizes_exactly_and_flips_both_frames_alike(video):
    mapper = small_mapper()
    np.random.seed(0)
    flips, pairs = Counter(), Counter()
    sx, sy = 96 / 64, 40 / 48
    for _ in range(30):
        out = mapper(video)
        a, b = out["frame_indices"]
        assert a <= b and b - a in (0, 1, 2) and 2 not in (a, b)
        pairs[(a, b)] += 1
        flipped = []
        for t, image, inst in zip(out["frame_indices"], out["image"], out["instances"]):
            assert image.shape == (3, 40, 96) and image.dtype == torch.uint8
            original = cv2.cvtColor(cv2.imread(video["file_names"][t]), cv2.COLOR_BGR2RGB)  # INPUT.FORMAT RGB
            resized = cv2.resize(original, (96, 40), interpolation=cv2.INTER_LINEAR)
            hwc = image.permute(1, 2, 0).numpy()
            flip = np.array_equal(hwc, resized[:, ::-1])
            assert flip or np.array_equal(hwc, resized)
            flipped.append(flip)
            assert inst.image_size == (40, 96) and inst.gt_ids.tolist() == [7, 9]
            assert inst.gt_classes.tolist() == [1, 1]
            for row, o in enumerate(video["annotations"][t]):
                x, y, w, h = o["bbox"]
                box = [x * sx, y * sy, (x + w) * sx, (y + h) * sy]  # continuous convention
                if flip:
                    box = [96 - box[2], box[1], 96 - box[0], box[3]]
                assert inst.gt_boxes.tensor[row].tolist() == pytest.approx(box, abs=1e-4)
                mask = cv2.resize(
                    mask_util.decode(o["segmentation"]), (96, 40), interpolation=cv2.INTER_NEAREST
                )
                mask = mask[:, ::-1] if flip else mask
                assert torch.equal(inst.gt_masks.tensor[row], torch.from_numpy(mask.astype(bool)))
        assert flipped[0] == flipped[1]
        flips[flipped[0]] += 1
    assert flips[True] > 5 and flips[False] > 5
    assert set(pairs) <= {(0, 1), (1, 3), (0, 0), (1, 1), (3, 3)} and {(0, 1), (1, 3)} <= set(pairs)
    assert not any(a == b for a, b in pairs)  # every usable frame here has a neighbour


def test_single_usable_frame_and_empty_videos(video, caplog):
    mapper = small_mapper()
    video["annotations"][0] = video["annotations"][1] = []
    with caplog.at_level(logging.WARNING, logger="stmask.data.clip_mapper"):
        for _ in range(3):
            assert mapper(video)["frame_indices"] == [3, 3]
    assert caplog.text.count("video 11: a single frame with objects") == 1  # once per video id
    caplog.clear()
    video["annotations"][3] = [obj(7, (1, 1, 5, 5), iscrowd=1)]
    with caplog.at_level(logging.WARNING, logger="stmask.data.clip_mapper"):
        assert mapper(video) is None and mapper(video) is None  # MapDataset draws another video
    assert caplog.text.count("video 11: no frame with a (non-crowd") == 1


def test_synthetic_training_videos_map():
    register_synthetic_vis()
    videos = DatasetCatalog.get("synthetic_vis_train")
    cfg = load_config(SYNTHETIC)
    mapper = build_train_mapper(cfg)
    np.random.seed(0)
    for v in videos[:6]:
        out = mapper(v)
        assert [tuple(i.shape) for i in out["image"]] == [(3, 128, 160)] * 2
        a, b = out["frame_indices"]
        assert a <= b <= a + 2
        for inst in out["instances"]:
            assert len(inst) > 0 and inst.gt_masks.tensor.shape[1:] == (128, 160)
            assert inst.has("gt_ids") and inst.gt_classes.max() < 3


ALL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def test_the_config_set_is_complete():
    names = {f"STMask_plus_{m}{f}{d}.yaml" for m in ("resnet50", "base") for f in ("", "_ali", "_ada")
             for d in ("", "_ytvis2021", "_ovis")}  # fmt: skip
    assert set(ALL_CONFIGS) == names | {"Base-STMask.yaml", "STMask-synthetic.yaml"}


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_loads(name):
    cfg = load_config(str(CONFIGS / name))
    m, r, s = cfg.MODEL, cfg.MODEL.RESNETS, cfg.MODEL.STMASK
    assert m.META_ARCHITECTURE == "STMask" and m.BACKBONE.NAME == "build_stmask_resnet_fpn_backbone"
    assert (cfg.INPUT.FORMAT, cfg.INPUT.DATASET_MAPPER_NAME, cfg.INPUT.MIN_SIZE_TEST) == (
        "RGB",
        "STMaskClipMapper",
        0,
    )
    assert tuple(m.PIXEL_MEAN) == (123.675, 116.28, 103.53) and tuple(m.PIXEL_STD) == (58.395, 57.12, 57.375)
    assert m.WEIGHTS == "" and not r.STRIDE_IN_1X1 and tuple(r.OUT_FEATURES) == ("res3", "res4", "res5")
    if name == "STMask-synthetic.yaml":
        assert (r.DEPTH, r.NORM, s.NUM_CLASSES, s.FPN_CHANNELS, s.PROTO_CHANNELS) == (18, "BN", 3, 64, 64)
        assert tuple(s.FIXED_INPUT_SIZE_TRAIN) == (128, 160) == tuple(s.FIXED_INPUT_SIZE_TEST)
        assert cfg.DATASETS.TRAIN == ("synthetic_vis_train",) and cfg.DATASETS.TEST == ("synthetic_vis_val",)
        return
    assert (r.NORM, r.DEFORM_MODULATED, r.DEFORM_BIAS, tuple(r.DEFORM_ON_PER_STAGE)) == (
        "FrozenBN", True, True, (False, True, True, True),
    )  # fmt: skip
    assert tuple(s.FIXED_INPUT_SIZE_TRAIN) == (360, 640) == tuple(s.FIXED_INPUT_SIZE_TEST)
    o = cfg.SOLVER
    assert (o.BASE_LR, o.MOMENTUM, o.WEIGHT_DECAY, o.IMS_PER_BATCH, o.GAMMA) == (1e-4, 0.9, 1e-4, 8, 0.1)
    assert (tuple(o.STEPS), o.MAX_ITER, o.WARMUP_ITERS) == ((75000, 100000), 125000, 0)
    stem = name.removesuffix(".yaml")
    depth, interval = (101, 3) if "_base" in stem else (50, 2)
    fcb = "ali" if "_ali" in stem else "ada" if "_ada" in stem else "none"
    dataset, classes = (
        ("ovis", 25) if "_ovis" in stem else ("ytvis_2021", 40) if "2021" in stem else ("ytvis_2019", 40)
    )
    assert (r.DEPTH, r.DEFORM_INTERVAL, s.FCB, s.NUM_CLASSES) == (depth, interval, fcb, classes)
    assert cfg.DATASETS.TRAIN == (f"{dataset}_train",) and cfg.DATASETS.TEST == (f"{dataset}_val",)
    for split in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert split in DatasetCatalog.list()
