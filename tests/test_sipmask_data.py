"""The real-time ("SSD-style") training pipeline."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import BoxMode

from onestage.config import get_cfg
from onestage.data import build_train_mapper
from sipmask.data import SSDDatasetMapper, expand, min_iou_random_crop
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
    cfg.merge_from_file(str(REPO_ROOT / "configs/SipMask/sipmask_r50_caffe_fpn_ssd_6x.yaml"))
    cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN = [64, 96]
    assert isinstance(build_train_mapper(cfg), SSDDatasetMapper)
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
    cfg.INPUT.DATASET_MAPPER_NAME = "DatasetMapper"
    assert not isinstance(build_train_mapper(cfg), SSDDatasetMapper)


class _Mapped(torch.utils.data.Dataset):
    """``n`` copies of one dataset dict, each run through ``mapper``."""

    def __init__(self, mapper: SSDDatasetMapper, d: dict, n: int):
        self.mapper, self.d, self.n = mapper, d, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.mapper(self.d)["image"]


def _one_box_image(tmp_path) -> dict:
    image = np.zeros((24, 32, 3), dtype=np.uint8)
    image[4:16, 6:20] = (40, 160, 220)
    cv2.imwrite(str(tmp_path / "b.png"), image)
    poly = [[6, 4, 20, 4, 20, 16, 6, 16]]
    ann = {"bbox": [6, 4, 14, 12], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "segmentation": poly}
    return {"file_name": str(tmp_path / "b.png"), "height": 24, "width": 32, "annotations": [ann]}


def _ssd_mapper(seed: int | None = None) -> SSDDatasetMapper:
    return SSDDatasetMapper(image_format="BGR", size=(16, 24), mean=(100.0, 110.0, 120.0), seed=seed)


@pytest.mark.parametrize("seed", [None, 7])
def test_ssd_mapper_draws_differ_between_loader_workers(tmp_path, seed):
    """Worker 0 maps items 0, 2, worker 1 items 1, 3 (batch size 1, sequential sampler): the dicts
    are identical, so equal outputs would mean both workers replay the same draws."""
    from detectron2.data.build import worker_init_reset_seed

    dataset = _Mapped(_ssd_mapper(seed), _one_box_image(tmp_path), 4)

    def run() -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=1,
            num_workers=2,
            worker_init_fn=worker_init_reset_seed,
            generator=torch.Generator().manual_seed(0),  # base seed of the workers' torch RNG
        )
        return [batch[0] for batch in loader]

    first = run()
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[2], first[3])
    assert not torch.equal(first[0], first[2])  # and each worker moves on between calls
    again = run()  # same loader seed: same draws
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_ssd_mapper_is_reproducible_from_the_global_seed(tmp_path):
    from detectron2.utils.env import seed_all_rng

    d, mapper = _one_box_image(tmp_path), _ssd_mapper()

    def draws(seed: int) -> list[torch.Tensor]:
        seed_all_rng(seed)
        return [mapper(d)["image"] for _ in range(3)]

    a, b, c = draws(5), draws(5), draws(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], c[0])
