"""The shape renderer and the synthetic COCO-format dataset."""

import json

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog

from vis_eval.data import shapes, synthetic


def test_visible_masks_later_shapes_occlude_earlier():
    full = np.zeros((3, 4, 4), bool)
    full[0, :, :3] = True  # bottom
    full[1, :2, :] = True  # middle
    full[2, 0, 0] = True  # top
    visible = shapes.visible_masks(full)
    expected0 = np.zeros((4, 4), bool)
    expected0[2:, :3] = True
    expected1 = full[1].copy()
    expected1[0, 0] = False
    assert (visible[0] == expected0).all()
    assert (visible[1] == expected1).all()
    assert (visible[2] == full[2]).all()


def test_creates_hole():
    ring = np.ones((9, 9), bool)
    ring[4, 4] = False
    assert shapes.creates_hole(ring)
    notch = np.ones((9, 9), bool)
    notch[0, 4] = False
    assert not shapes.creates_hole(notch)


def test_polygons_reproduce_the_mask():
    shape = shapes.Shape(category=2, cx=30.0, cy=25.0, size=14.0, angle=0.3, color=(0, 0, 255))
    mask = shapes.rasterize(shape, 64, 64)
    polygons = shapes.mask_to_polygons(mask)
    # the polygon through boundary-pixel centres loses at most a half-pixel rim
    rle = mask_util.merge(mask_util.frPyObjects(polygons, 64, 64))
    decoded = mask_util.decode(rle).astype(bool)
    iou = (decoded & mask).sum() / (decoded | mask).sum()
    assert iou > 0.85
    x, y, w, h = shapes.mask_bbox(mask)
    ys, xs = np.nonzero(mask)
    assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_shape_polygon_vertex_counts_and_radius():
    for category, count in enumerate((32, 3, 4)):
        shape = shapes.Shape(category, 10.0, 20.0, 5.0, 0.0, (0, 0, 0))
        polygon = shapes.shape_polygon(shape)
        assert polygon.shape == (count, 2)
        assert np.allclose(np.hypot(polygon[:, 0] - 10, polygon[:, 1] - 20), 5.0)


def test_images_are_deterministic_by_seed():
    image_a, anns_a = synthetic.render_image(seed=5, index=3)
    image_b, anns_b = synthetic.render_image(seed=5, index=3)
    image_c, _ = synthetic.render_image(seed=6, index=3)
    assert (image_a == image_b).all() and anns_a == anns_b
    assert not (image_a == image_c).all()


def test_dataset_statistics():
    spec = synthetic.SCENE
    anns = [a for i in range(120) for a in synthetic.render_image(seed=1, index=i)[1]]
    categories = {a["category_id"] for a in anns}
    assert categories == {1, 2, 3}
    extents = np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns])
    assert extents.min() < 20 and extents.max() > 50 and extents.max() <= spec.max_extent + 2
    # occlusion: some visible areas are clearly smaller than their whole shape
    ratios = []
    for i in range(40):
        rng = np.random.default_rng([1, i])
        shapes.render_background(rng, spec.height, spec.width)
        scene = synthetic.sample_scene(rng)
        if len(scene) < 2:
            continue
        full = np.stack([shapes.rasterize(s, spec.height, spec.width) for s in scene])
        visible = shapes.visible_masks(full)
        ratios += list(visible.sum((1, 2)) / np.maximum(full.sum((1, 2)), 1))
    assert min(ratios) < 0.8 and min(ratios) >= spec.min_visible_fraction
    for a in anns:
        assert a["area"] >= spec.min_visible_area
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])


def test_background_has_distractors():
    rng = np.random.default_rng(0)
    image = shapes.render_background(rng, 128, 128)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    # the gradient + noise alone varies smoothly; distractor strokes make sharp edges
    edges = np.abs(np.diff(image.astype(int), axis=1)).sum(-1)
    assert (edges > 120).sum() > 10


def test_registered_and_generated_on_first_use(tmp_path):
    synthetic.register_synthetic_shapes(root=tmp_path)  # no-op: already registered at import
    meta = MetadataCatalog.get("synthetic_shapes_tiny")
    assert meta.thing_classes == ["circle", "triangle", "square"]
    assert meta.evaluator_type == "coco"
    dicts = DatasetCatalog.get("synthetic_shapes_tiny")
    assert len(dicts) == synthetic.SPLITS["tiny"].num_images
    assert all(d["height"] == 128 and d["annotations"] for d in dicts)
    coco = json.loads(open(meta.json_file).read())
    assert len(coco["images"]) == len(dicts)
    json_file, image_root = synthetic.ensure_generated("tiny", tmp_path / "other")
    assert json.loads(json_file.read_text()) == coco
    assert sorted(p.name for p in image_root.iterdir())[0] == "000000.png"
