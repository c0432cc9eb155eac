"""The synthetic YouTube-VIS-format video dataset."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from vis_eval.data import shapes, synthetic_video
from vis_eval.data.synthetic_video import SCENE, render_video
from vis_eval.rle import mask_to_uncompressed_rle


def test_uncompressed_rle_round_trip():
    rng = np.random.default_rng(0)
    for mask in [rng.random((7, 5)) > 0.5, np.ones((3, 4), bool), np.zeros((3, 4), bool)]:
        rle = mask_to_uncompressed_rle(mask)
        assert rle["size"] == [mask.shape[0], mask.shape[1]] and sum(rle["counts"]) == mask.size
        decoded = mask_util.decode(mask_util.frPyObjects(rle, *mask.shape)).astype(bool)
        assert (decoded == mask).all()
    assert mask_to_uncompressed_rle(np.ones((2, 2), bool))["counts"] == [0, 4]


def test_videos_are_deterministic_by_seed():
    frames_a, tracks_a, vis_a = render_video(seed=3, index=1)
    frames_b, tracks_b, vis_b = render_video(seed=3, index=1)
    frames_c, _, _ = render_video(seed=4, index=1)
    assert tracks_a == tracks_b and (vis_a == vis_b).all()
    assert all((a == b).all() for a, b in zip(frames_a, frames_b))
    assert len(frames_a) != len(frames_c) or not all((a == c).all() for a, c in zip(frames_a, frames_c))


def test_tracks_move_occlude_enter_and_leave():
    late = early = gaps = partly_occluded = moved = scaled = 0
    categories = set()
    for index in range(30):
        frames, tracks, visible = render_video(seed=0, index=index)
        assert SCENE.min_frames <= len(frames) <= SCENE.max_frames
        assert frames[0].shape == (SCENE.height, SCENE.width, 3) and frames[0].dtype == np.uint8
        present = visible.any(axis=(2, 3))  # (N, T)
        for k, track in enumerate(tracks):
            categories.add(track.start.category)
            late += track.enter > 0
            early += track.leave < len(frames)
            lifetime = np.array([track.at(t) is not None for t in range(len(frames))])
            gaps += track.gap_end > track.gap_start
            assert not (present[k] & ~lifetime).any()  # never visible outside its lifetime
            for t in np.flatnonzero(lifetime):
                full = shapes.rasterize(track.at(t), SCENE.height, SCENE.width)
                assert not (visible[k, t] & ~full).any()
                partly_occluded += visible[k, t].sum() < full.sum()
            first, last = track.at(track.enter), track.at(track.leave - 1)
            moved += np.hypot(last.cx - first.cx, last.cy - first.cy) > 3
            scaled += abs(np.log(last.size / first.size)) > 0.05
        # visible masks are disjoint (later shapes occlude earlier ones) and painted in the frame
        assert (visible.sum(0) <= 1).all()
        for k, track in enumerate(tracks):
            for t in np.flatnonzero(present[k]):
                assert (frames[t][visible[k, t]] == track.start.color).all()
    assert categories == set(range(len(shapes.CLASS_NAMES)))
    assert late > 5 and early > 5 and gaps > 5 and partly_occluded > 50 and moved > 20 and scaled > 10


def test_split_json_format(tmp_path):
    json_file, image_root = synthetic_video.ensure_generated("tiny", tmp_path)
    data = json.loads(json_file.read_text())
    assert {"videos", "annotations", "categories"} <= set(data)
    assert [c["name"] for c in data["categories"]] == list(shapes.CLASS_NAMES)
    assert len(data["videos"]) == synthetic_video.SPLITS["tiny"].num_videos
    videos = {v["id"]: v for v in data["videos"]}
    nulls = 0
    for ann in data["annotations"]:
        video = videos[ann["video_id"]]
        length = video["length"]
        assert len(video["file_names"]) == length
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == length
        for seg, box, area in zip(ann["segmentations"], ann["bboxes"], ann["areas"]):
            assert (seg is None) == (box is None) == (area is None)
            nulls += seg is None
            if seg is None:
                continue
            assert isinstance(seg["counts"], list)  # uncompressed, like the official train JSONs
            mask = mask_util.decode(mask_util.frPyObjects(seg, video["height"], video["width"]))
            assert int(mask.sum()) == area > 0
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    assert nulls > 0
    for video in data["videos"]:
        assert (image_root / video["file_names"][-1]).is_file()
    # the same split generated twice is identical
    again, _ = synthetic_video.ensure_generated("tiny", tmp_path / "again")
    assert json.loads(again.read_text()) == data
    with pytest.raises(KeyError, match="unknown synthetic_vis split"):
        synthetic_video.ensure_generated("nope", tmp_path)


def test_registered_and_loaded_as_ytvis(tmp_path):
    synthetic_video.register_synthetic_vis()  # default root; no-op if already registered
    meta = MetadataCatalog.get("synthetic_vis_tiny")
    assert meta.evaluator_type == "ytvis"
    assert meta.thing_classes == list(shapes.CLASS_NAMES)
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    videos = DatasetCatalog.get("synthetic_vis_tiny")
    data = json.loads(open(meta.json_file).read())
    assert len(videos) == len(data["videos"])
    for video in videos:
        assert len(video["annotations"]) == len(video["file_names"]) == video["length"]
        anns = [a for a in data["annotations"] if a["video_id"] == video["video_id"]]
        for t, objects in enumerate(video["annotations"]):
            expected = {a["id"]: a for a in anns if a["segmentations"][t] is not None}
            assert {o["id"] for o in objects} == set(expected)  # absent tracks have no dict
            for obj in objects:
                assert obj["category_id"] == expected[obj["id"]]["category_id"] - 1  # contiguous
                mask = mask_util.decode(obj["segmentation"])
                assert int(mask.sum()) == expected[obj["id"]]["areas"][t]
