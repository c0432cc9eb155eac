"""Hand-made per-frame ground truth for the video-model tests."""

import torch
from detectron2.structures import BitMasks, Boxes, Instances


def frame_instances(boxes, ids, classes=None, size=(64, 64)) -> Instances:
    """One frame's ``Instances``: ``gt_boxes`` (x1, y1, x2, y2) pixels, ``gt_ids``, ``gt_classes``
    (0 by default) and box-shaped ``gt_masks`` of ``size`` (H, W)."""
    inst = Instances(size)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.tensor(classes if classes is not None else [0] * len(boxes), dtype=torch.int64)
    inst.gt_ids = torch.tensor(ids, dtype=torch.int64)
    masks = torch.zeros((len(boxes), *size), dtype=torch.bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
        m[y1:y2, x1:x2] = True
    inst.gt_masks = BitMasks(masks)
    return inst
