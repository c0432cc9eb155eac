"""The training clip mapper: frame sampling, clip-consistent augmentation, per-frame Instances."""

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode

from vis_eval.config import add_vis_eval_config
from vis_eval.data.video_mapper import (
    VideoClipMapper,
    reference_positions,
    sample_clip_frames,
)

H, W, LENGTH = 40, 60, 8
COLORS = {11: (0, 0, 255), 12: (0, 255, 0), 13: (255, 0, 0)}  # track id -> BGR (11 is red)


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture
def video(tmp_path):
    """8 frames; track 11 moves right in every frame, 12 is present in frames 2-5 only (polygon
    annotations), 13 is a crowd region in every frame."""
    file_names, annotations = [], []
    for t in range(LENGTH):
        image = np.full((H, W, 3), 90, np.uint8)
        objects = []
        masks = {11: rect(2 + 2 * t, 5, 14 + 2 * t, 20)}
        if 2 <= t <= 5:
            masks[12] = rect(35, 22, 50, 36)
        masks[13] = rect(52, 0, 60, 8)
        for track_id, mask in masks.items():
            image[mask.astype(bool)] = COLORS[track_id]
            x, y, w, h = mask_util.toBbox(mask_util.encode(np.asfortranarray(mask))).tolist()
            segm = mask_util.encode(np.asfortranarray(mask))
            if track_id == 12:
                segm = [[35.0, 22.0, 50.0, 22.0, 50.0, 36.0, 35.0, 36.0]]
            objects.append(
                {
                    "id": track_id,
                    "category_id": track_id - 11,
                    "bbox": [x, y, w, h],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "segmentation": segm,
                    "iscrowd": int(track_id == 13),
                }
            )
        path = tmp_path / f"{t:05d}.png"
        cv2.imwrite(str(path), image)
        file_names.append(str(path))
        annotations.append(objects)
    return {
        "video_id": 7,
        "file_names": file_names,
        "height": H,
        "width": W,
        "length": LENGTH,
        "annotations": annotations,
    }


def test_sample_clip_frames():
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames = sample_clip_frames(rng, 30, 5, 3, reference_candidates=[10, 20])
        assert len(frames) == 5 and frames == sorted(frames)
        assert len(set(frames)) == 5  # enough candidates: no duplicates
        ref = 10 if 10 in frames and max(frames) <= 13 else 20
        assert all(abs(t - ref) <= 3 for t in frames)
    # fewer candidates than needed: duplicates; a one-frame video repeats its frame
    frames = sample_clip_frames(rng, 3, 5, 10)
    assert len(frames) == 5 and set(frames) <= {0, 1, 2}
    assert sample_clip_frames(rng, 1, 3, 5) == [0, 0, 0]
    assert sample_clip_frames(rng, 9, 1, 0, reference_candidates=[4]) == [4]
    shuffled = [sample_clip_frames(rng, 50, 6, 25, shuffle=True) for _ in range(20)]
    assert any(f != sorted(f) for f in shuffled)
    # the global generator (what the mapper uses) works too
    assert len(sample_clip_frames(np.random, 10, 3, 2)) == 3
    with pytest.raises(ValueError):
        sample_clip_frames(rng, 0, 2, 2)
    with pytest.raises(ValueError):
        sample_clip_frames(rng, 5, 0, 2)


def test_reference_positions():
    query = torch.tensor([5, 9, 3, 7])
    reference = torch.tensor([3, 5, 8])
    assert reference_positions(query, reference).tolist() == [2, 0, 1, 0]
    assert reference_positions(query, torch.zeros(0, dtype=torch.int64)).tolist() == [0, 0, 0, 0]


def test_clip_mapper_applies_one_augmentation_to_every_frame(video):
    augs = [
        T.ResizeShortestEdge([20, 30, 50], max_size=1000, sample_style="choice"),
        T.RandomFlip(prob=0.5),
        T.RandomBrightness(0.5, 1.5),
    ]
    mapper = VideoClipMapper(
        True, augmentations=augs, image_format="BGR", sampling_frame_num=3, sampling_frame_range=2
    )
    np.random.seed(0)
    sizes, flips = set(), set()
    for _ in range(12):
        clip = mapper(video)
        assert (
            clip["video_id"] == 7 and clip["length"] == LENGTH and (clip["height"], clip["width"]) == (H, W)
        )
        frames = clip["frame_indices"]
        assert len(frames) == 3 and frames == sorted(frames) and max(frames) - min(frames) <= 4
        assert clip["file_names"] == [video["file_names"][t] for t in frames]
        shapes = {tuple(img.shape) for img in clip["image"]}
        assert len(shapes) == 1  # one resize for the whole clip
        sizes |= shapes
        clip_flips, gains = set(), set()
        for t, image, inst in zip(frames, clip["image"], clip["instances"]):
            assert image.dtype == torch.uint8 and inst.image_size == tuple(image.shape[1:])
            expected_ids = [11, 12] if 2 <= t <= 5 else [11]  # crowd 13 dropped; 12 absent outside 2-5
            assert inst.gt_ids.tolist() == expected_ids
            assert inst.gt_classes.tolist() == [i - 11 for i in expected_ids]
            assert isinstance(inst.gt_masks, BitMasks) and len(inst.gt_masks) == len(expected_ids)
            # the transformed mask of track 11 covers red pixels of the transformed frame
            mask = inst.gt_masks.tensor[0]
            pixels = image.permute(1, 2, 0)[mask].float()
            assert pixels[:, 2].mean() > 3 * max(pixels[:, 1].mean(), pixels[:, 0].mean(), 1.0)
            gains.add(round(float(pixels[:, 2].median()), 0))
            # box from annotations agrees with the mask
            box = inst.gt_boxes.tensor[0]
            mbox = inst.gt_masks.get_bounding_boxes().tensor[0]
            assert torch.allclose(box, mbox, atol=2.0)
            # track 11 starts on the left of the original frame: flipped iff its mask is on the right
            column = mask.any(0).nonzero().float().mean() / image.shape[2]
            clip_flips.add(bool(column > 0.5) if t < 4 else None)
        clip_flips.discard(None)
        assert len(clip_flips) <= 1  # same flip in every frame
        flips |= clip_flips
        assert len(gains) == 1  # same brightness change in every frame
    assert len(sizes) > 1 and flips == {True, False}  # but different clips differ


def test_clip_mapper_reference_is_an_annotated_frame(video):
    for t in range(LENGTH):
        if t != 6:
            video["annotations"][t] = [o for o in video["annotations"][t] if o["iscrowd"]]
    mapper = VideoClipMapper(True, augmentations=[], image_format="RGB", sampling_frame_num=1)
    for _ in range(5):
        clip = mapper(video)
        assert clip["frame_indices"] == [6] and clip["instances"][0].gt_ids.tolist() == [11]
    # RGB: the red object of the BGR file has a red first channel
    image, inst = clip["image"][0], clip["instances"][0]
    assert image[0][inst.gt_masks.tensor[0]].float().mean() > 200


def test_clip_mapper_from_config_and_eval_mode(video):
    cfg = get_cfg()
    add_vis_eval_config(cfg)
    cfg.INPUT.SAMPLING_FRAME_NUM = 4
    cfg.INPUT.MIN_SIZE_TEST = 20
    mapper = VideoClipMapper(cfg, is_train=False)
    clip = mapper(video)
    assert clip["frame_indices"] == [0, 1, 2, 3]
    assert all(tuple(img.shape) == (3, 20, 30) for img in clip["image"])
    assert [inst.gt_ids.tolist() for inst in clip["instances"]] == [[11], [11], [11, 12], [11, 12]]
    train = VideoClipMapper(cfg, is_train=True)
    assert train.sampling_frame_num == 4 and train.sampling_frame_range == 20


def test_clip_mapper_errors(video, tmp_path):
    mapper = VideoClipMapper(True, augmentations=[], image_format="BGR", sampling_frame_num=2)
    bad = dict(video, annotations=video["annotations"][:-1])
    with pytest.raises(ValueError, match="annotation lists"):
        mapper(bad)
    with pytest.raises(ValueError, match="no frames"):
        mapper(dict(video, file_names=[], annotations=[]))
    with pytest.raises(KeyError, match="height"):
        mapper({k: v for k, v in video.items() if k != "height"})
    with pytest.raises(ValueError, match="video dict says"):
        mapper(dict(video, width=W + 1))
    missing = dict(video, file_names=[str(tmp_path / "missing.png")] * LENGTH)
    with pytest.raises(FileNotFoundError):
        mapper(missing)
    with pytest.raises(ValueError):
        VideoClipMapper(True, augmentations=[], image_format="BGR", sampling_frame_num=0)
    # a video without annotations (a valid/test split) still maps, with no instances
    clip = mapper({k: v for k, v in video.items() if k != "annotations"})
    assert clip["instances"] == [] and len(clip["image"]) == 2


def test_clip_mapper_on_the_synthetic_videos():
    from detectron2.data import DatasetCatalog

    from vis_eval.data.synthetic_video import register_synthetic_vis

    register_synthetic_vis()
    videos = DatasetCatalog.get("synthetic_vis_tiny")
    mapper = VideoClipMapper(
        True,
        augmentations=[T.ResizeShortestEdge([64, 64], 1000), T.RandomFlip()],
        image_format="RGB",
        sampling_frame_num=3,
        sampling_frame_range=4,
    )
    np.random.seed(1)
    for video in videos:
        clip = mapper(video)
        for t, image, inst in zip(clip["frame_indices"], clip["image"], clip["instances"]):
            assert tuple(image.shape) == (3, 64, 80)
            expected = sorted(o["id"] for o in video["annotations"][t])
            assert sorted(inst.gt_ids.tolist()) == expected
            assert len(inst.gt_masks) == len(expected) and inst.gt_masks.tensor.shape[1:] == (64, 80)
