"""The real-time ("SSD-style") training pipeline."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BoxMode

from sipmask import add_sipmask_config
from sipmask.data import SSDDatasetMapper, build_sipmask_train_mapper, expand, min_iou_random_crop
from sipmask.data.ssd_augmentation import _iou_plus1, photometric_distortion
from tests.conftest import REPO_ROOT


def test_expand_places_image_on_mean_canvas():
    rng = np.random.default_rng(3)
    img = np.full((10, 20, 3), 7.0, dtype=np.float32)
    boxes = np.array([[2.0, 3.0, 8.0, 9.0]], dtype=np.float32)
    masks = np.zeros((1, 10, 20), dtype=bool)
    masks[0, 3:9, 2:8] = True
    for _ in range(10):  # at least one draw expands (p = 0.5)
        out, b, m = expand(img, boxes, masks, rng, mean=(1.0, 2.0, 3.0))
        if out.shape != img.shape:
            break
    assert out.shape[0] >= 10 and out.shape[1] >= 20 and out.shape != img.shape
    ys, xs = np.nonzero(m[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(b[0].astype(int))
    assert (out[ys, xs] == 7.0).all()  # the image moved with its mask
    assert (out[out[..., 0] != 7.0] == np.array([1.0, 2.0, 3.0])).all()


def test_min_iou_crop_keeps_centred_boxes_and_meets_the_iou():
    rng = np.random.default_rng(0)
    img = np.zeros((100, 120, 3), dtype=np.float32)
    boxes = np.array([[10.0, 10.0, 50.0, 60.0], [70.0, 20.0, 110.0, 90.0]], dtype=np.float32)
    classes = np.array([0, 2])
    masks = np.zeros((2, 100, 120), dtype=bool)
    masks[0, 10:60, 10:50] = True
    masks[1, 20:90, 70:110] = True
    cropped = 0
    for _ in range(30):
        out, b, c, m = min_iou_random_crop(img, boxes, classes, masks, rng)
        assert out.shape[:2] == m.shape[1:] and len(b) == len(c) == len(m) >= 1
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= out.shape[1]).all() and (b[:, 3] <= out.shape[0]).all()
        if out.shape != img.shape:
            cropped += 1
            assert 0.45 <= out.shape[0] / out.shape[1] <= 2.2  # h'/w' in [0.5, 2] before integer truncation
    assert cropped > 0
    patch = np.array([0, 0, 59, 59])
    assert _iou_plus1(patch, boxes[:1])[0] == pytest.approx(41 * 50 / (3600 + 41 * 51 - 41 * 50))


def test_photometric_distortion_keeps_shape_and_changes_colour():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    outs = [photometric_distortion(img, rng) for _ in range(8)]
    assert all(o.shape == img.shape and o.dtype == np.float32 for o in outs)
    assert any(not np.allclose(o, img, atol=1e-2) for o in outs)


def test_ssd_mapper_output(tmp_path):
    cfg = get_cfg()
    add_sipmask_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / "configs/SipMask/sipmask_r50_caffe_fpn_ssd_6x.yaml"))
    cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN = [64, 96]
    assert isinstance(build_sipmask_train_mapper(cfg), SSDDatasetMapper)
    image = np.zeros((50, 80, 3), dtype=np.uint8)
    cv2.rectangle(image, (10, 10), (39, 29), (255, 255, 255), -1)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    poly = [[10, 10, 40, 10, 40, 30, 10, 30]]
    d = {
        "file_name": str(tmp_path / "a.png"),
        "height": 50,
        "width": 80,
        "annotations": [
            {"bbox": [10, 10, 30, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "segmentation": poly}
        ],
    }
    mapper = SSDDatasetMapper(cfg)
    for _ in range(6):
        out = mapper(d)
        assert out["image"].shape == (3, 64, 96) and out["image"].dtype == torch.float32
        inst = out["instances"]
        assert inst.image_size == (64, 96) and len(inst) == 1 and inst.gt_classes.tolist() == [1]
        m = inst.gt_masks.tensor[0]
        ys, xs = torch.nonzero(m, as_tuple=True)
        x1, y1, x2, y2 = inst.gt_boxes.tensor[0].tolist()
        assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1
    assert "annotations" not in out
    cfg.INPUT.SSD_AUGMENTATION = False
    assert build_sipmask_train_mapper(cfg) is None
