"""MaskIoUTracker: a Detectron2 tracker head (association by mask IoU and class, bounded state)."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances
from detectron2.tracking.base_tracker import BaseTracker, build_tracker_head

from vis_eval.config import add_vis_eval_config
from vis_eval.video.tracker import MaskIoUTracker, mask_iou

H, W = 20, 30


def box_mask(x0, y0, x1, y1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def frame(objects, with_masks=True):
    """objects: list of (box (x0, y0, x1, y1), class, score)."""
    inst = Instances((H, W))
    boxes = [o[0] for o in objects]
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.pred_classes = torch.tensor([o[1] for o in objects], dtype=torch.int64)
    inst.scores = torch.tensor([o[2] for o in objects], dtype=torch.float32)
    if with_masks:
        inst.pred_masks = (
            torch.stack([box_mask(*b) for b in boxes]) if boxes else torch.zeros(0, H, W, dtype=bool)
        )
    return inst


def test_mask_iou_matches_bruteforce():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, H, W, generator=g) > 0.5
    b = torch.rand(3, H, W, generator=g) > 0.7
    b[0] = False  # an empty mask
    iou = mask_iou(a, b)
    for i in range(4):
        for j in range(3):
            union = (a[i] | b[j]).sum()
            expected = (a[i] & b[j]).sum() / union if union else 0.0
            assert iou[i, j] == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="sizes differ"):
        mask_iou(a, b[:, :5])


def test_tracks_keep_ids_through_motion_and_order_changes():
    tracker = MaskIoUTracker()
    out = tracker.update(frame([((0, 0, 10, 10), 0, 0.9), ((15, 5, 25, 15), 1, 0.8)]))
    assert out.ID == [0, 1]
    # both moved by 2 px; detection order reversed
    out = tracker.update(frame([((17, 5, 27, 15), 1, 0.7), ((2, 0, 12, 10), 0, 0.9)]))
    assert out.ID == [1, 0]
    # a new object appears, object 0 disappears for one frame
    out = tracker.update(frame([((18, 6, 28, 16), 1, 0.7), ((0, 12, 6, 20), 0, 0.5)]))
    assert out.ID == [1, 2]
    # object 0 comes back within max_age
    out = tracker.update(frame([((3, 0, 13, 10), 0, 0.6), ((0, 12, 6, 20), 0, 0.5)]))
    assert out.ID == [0, 2]


def test_class_mismatch_threshold_and_score_filter():
    tracker = MaskIoUTracker(iou_threshold=0.5, score_threshold=0.3)
    tracker.update(frame([((0, 0, 10, 10), 0, 0.9)]))
    # same place, other class -> new track; low score -> dropped
    out = tracker.update(frame([((0, 0, 10, 10), 2, 0.9), ((0, 0, 10, 10), 0, 0.1)]))
    assert out.ID == [1] and out.pred_classes.tolist() == [2]
    # IoU 0.25 with track 1 < 0.5 -> new track
    out = tracker.update(frame([((5, 5, 15, 15), 2, 0.9)]))
    assert out.ID == [2]
    relaxed = MaskIoUTracker(match_class=False)
    relaxed.update(frame([((0, 0, 10, 10), 0, 0.9)]))
    assert relaxed.update(frame([((0, 0, 10, 10), 2, 0.9)])).ID == [0]


def test_one_to_one_assignment_is_optimal():
    tracker = MaskIoUTracker(iou_threshold=0.3)
    tracker.update(frame([((0, 0, 10, 10), 0, 0.9), ((6, 0, 16, 10), 0, 0.9)]))
    # A: IoU 0.43 with track 0, 0.67 with track 1; B: IoU 0.43 with track 1 only.
    # Greedy by score would give A -> 1 and make B a new track; the optimum is A -> 0, B -> 1.
    out = tracker.update(frame([((4, 0, 14, 10), 0, 0.95), ((10, 0, 20, 10), 0, 0.5)]))
    assert out.ID == [0, 1]
    # two detections on one track (the other track is far): only one keeps the id
    out = tracker.update(frame([((4, 0, 14, 10), 0, 0.9), ((4, 0, 14, 9), 0, 0.8)]))
    assert sorted(out.ID) == [0, 2]


def test_state_is_pruned_after_max_age():
    tracker = MaskIoUTracker(max_age=2)
    tracker.update(frame([((0, 0, 10, 10), 0, 0.9)]))
    for _ in range(2):
        tracker.update(frame([]))
        assert tracker.num_tracks == 1
    tracker.update(frame([]))
    assert tracker.num_tracks == 0
    assert tracker.update(frame([((0, 0, 10, 10), 0, 0.9)])).ID == [1]  # no revival
    # a new tracker for a new video starts from id 0
    assert MaskIoUTracker().update(frame([((0, 0, 10, 10), 0, 0.9)])).ID == [0]


def test_state_is_bounded_by_the_live_tracks_not_the_frames():
    """300 frames of objects that appear, move, pause (vanish for a few frames) and leave: after
    every frame the tracker remembers exactly the tracks that are still live (output within the last
    max_age + 1 frames), so its state does not grow with the number of frames."""
    max_age = 3
    tracker = MaskIoUTracker(max_age=max_age)
    rng = np.random.default_rng(0)
    objects = []  # [x, y, class, frames left, hidden frames left]
    last_seen: dict[int, int] = {}
    most_live = 0
    for t in range(300):
        if rng.random() < 0.3:  # a new object enters
            objects.append([int(rng.integers(0, W - 6)), int(rng.integers(0, H - 6)), int(rng.integers(3)),
                            int(rng.integers(3, 20)), 0])  # fmt: skip
        visible = []
        for obj in objects:
            obj[3] -= 1
            obj[4] = max(obj[4] - 1, 0)
            if obj[4] == 0 and rng.random() < 0.1:
                obj[4] = int(rng.integers(1, max_age + 3))  # hidden for a while, maybe too long
            obj[0] = min(max(obj[0] + int(rng.integers(-1, 2)), 0), W - 6)
            if obj[4] == 0:
                visible.append(((obj[0], obj[1], obj[0] + 6, obj[1] + 6), obj[2], 0.9))
        objects = [obj for obj in objects if obj[3] > 0]
        out = tracker.update(frame(visible))
        assert len(out) == len(visible) and len(set(out.ID)) == len(out.ID)
        for track_id in out.ID:
            last_seen[track_id] = t
        live = {i for i, seen in last_seen.items() if t - seen <= max_age}
        assert tracker.num_tracks == len(live), t
        assert sorted(tracker._prev_instances.track_id.tolist()) == sorted(live)
        most_live = max(most_live, len(live))
    assert len(last_seen) > 4 * most_live  # many more tracks over the video than ever remembered


def test_box_iou_without_masks_and_errors():
    tracker = MaskIoUTracker()
    tracker.update(frame([((0, 0, 10, 10), 0, 0.9)], with_masks=False))
    out = tracker.update(frame([((1, 0, 11, 10), 0, 0.9)], with_masks=False))
    assert out.ID == [0]
    with pytest.raises(ValueError, match="consistently"):
        tracker.update(frame([((1, 0, 11, 10), 0, 0.9)]))
    with pytest.raises(TypeError, match="Instances"):
        tracker.update({"instances": frame([])})
    tracker = MaskIoUTracker()
    tracker.update(frame([((0, 0, 10, 10), 0, 0.9)]))
    other = frame([((0, 0, 10, 10), 0, 0.9)])
    other._image_size = (H + 1, W)
    with pytest.raises(ValueError, match="frame size changed"):
        tracker.update(other)
    with pytest.raises(ValueError):
        MaskIoUTracker(iou_threshold=1.5)


def test_soft_masks_are_thresholded():
    tracker = MaskIoUTracker()
    out = frame([((0, 0, 10, 10), 0, 0.9)])
    out.pred_masks = out.pred_masks.float() * 0.4  # all below 0.5
    tracker.update(out)
    assert not tracker._prev_instances.pred_masks.any()


def test_built_from_the_config_by_detectron2():
    cfg = get_cfg()
    add_vis_eval_config(cfg)
    assert cfg.TRACKER_HEADS.TRACKER_NAME == "MaskIoUTracker"
    default = build_tracker_head(cfg)
    assert isinstance(default, MaskIoUTracker) and isinstance(default, BaseTracker)
    assert (default.iou_threshold, default.score_threshold, default.max_age, default.match_class) == (
        0.3,
        0.05,
        5,
        True,
    )
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.MAX_AGE = 7
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.MATCH_CLASS = False
    tracker = build_tracker_head(cfg)
    assert tracker.max_age == 7 and not tracker.match_class
