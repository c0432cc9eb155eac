"""Synthetic COCO-format instance-segmentation data: textured images of occluding shapes.

Datasets (registered on import of :mod:`vis_eval.data`, generated on first use under
``$DETECTRON2_DATASETS/synthetic_shapes/<version>/``, default ``./datasets``):

* ``synthetic_shapes_train``: 2000 images, ``synthetic_shapes_val``: 200 images,
  ``synthetic_shapes_tiny``: 8 images (for learning tests);
* 128 x 128 RGB, 1-6 annotated shapes each (3 classes that differ in shape and colour), extents
  16-64 px, mutual occlusion, shapes cut by the border, unannotated distractors in the background;
* polygon annotations of the *visible* part of every shape; every image is a pure function of
  ``(split seed, image index)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..progress import ProgressLogger
from .shapes import (
    CLASS_COLORS,
    CLASS_NAMES,
    Shape,
    creates_hole,
    mask_bbox,
    mask_to_polygons,
    paint,
    random_shape,
    rasterize,
    render_background,
    visible_masks,
)

VERSION = "v1"

logger = logging.getLogger(__name__)


class DatasetRootError(OSError):
    """``$DETECTRON2_DATASETS`` (or the folder given) cannot hold the generated datasets."""


@dataclass(frozen=True)
class SplitSpec:
    num_images: int
    seed: int


@dataclass(frozen=True)
class SceneSpec:
    height: int = 128
    width: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_extent: float = 16.0
    max_extent: float = 64.0
    min_visible_area: int = 40  # pixels
    min_visible_fraction: float = 0.25  # of the whole shape inside the image
    attempts_per_object: int = 20


SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(2000, seed=0),
    "val": SplitSpec(200, seed=1),
    "tiny": SplitSpec(8, seed=2),
}
SCENE = SceneSpec()


def datasets_root() -> Path:
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser()


def sample_scene(rng: np.random.Generator, scene: SceneSpec = SCENE) -> list[Shape]:
    """Shapes in paint order such that each keeps enough visible area and no visible part has a hole."""
    shapes: list[Shape] = []
    full: list[np.ndarray] = []
    num_objects = int(rng.integers(scene.min_objects, scene.max_objects + 1))
    for _ in range(num_objects):
        for _ in range(scene.attempts_per_object):
            candidate = random_shape(rng, scene.height, scene.width, scene.min_extent, scene.max_extent)
            candidate_mask = rasterize(candidate, scene.height, scene.width)
            masks = np.stack(full + [candidate_mask])
            visible = visible_masks(masks)
            areas = visible.sum(axis=(1, 2))
            ok = (areas >= scene.min_visible_area) & (
                areas >= scene.min_visible_fraction * masks.sum(axis=(1, 2))
            )
            if ok.all() and not any(creates_hole(m) for m in visible):
                shapes.append(candidate)
                full.append(candidate_mask)
                break
    return shapes


def render_image(seed: int, index: int, scene: SceneSpec = SCENE) -> tuple[np.ndarray, list[dict]]:
    """One synthetic image (uint8 RGB, H x W x 3) and its COCO annotations (without ids)."""
    rng = np.random.default_rng([seed, index])
    image = render_background(rng, scene.height, scene.width)
    shapes = sample_scene(rng, scene)
    annotations = []
    for shape, mask in zip(shapes, paint(image, shapes)):
        polygons = mask_to_polygons(mask)
        if not polygons:
            continue
        annotations.append(
            {
                "category_id": shape.category + 1,  # COCO ids start at 1
                "bbox": mask_bbox(mask),
                "area": float(mask.sum()),
                "segmentation": polygons,
                "iscrowd": 0,
            }
        )
    return image, annotations


def write_split(out_dir: Path, split: str, spec: SplitSpec, scene: SceneSpec = SCENE) -> None:
    """Write ``out_dir/<split>/*.png`` and ``out_dir/<split>.json`` in COCO format."""
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    progress = ProgressLogger(logger, f"synthetic_shapes_{split}", spec.num_images, "images")
    for index in range(spec.num_images):
        progress.step()
        image, anns = render_image(spec.seed, index, scene)
        file_name = f"{index:06d}.png"
        cv2.imwrite(str(image_dir / file_name), image[:, :, ::-1])
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": scene.height, "width": scene.width})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    coco = {"images": images, "annotations": annotations, "categories": shape_categories()}
    (out_dir / f"{split}.json").write_text(json.dumps(coco))


def dataset_dir(root: Path | None = None) -> Path:
    return (root or datasets_root()) / "synthetic_shapes" / VERSION


def generate_once(base: Path, split: str, write: Callable[[Path], None]) -> Path:
    """Run ``write(out_dir)``, which writes ``out_dir/<split>/`` and ``out_dir/<split>.json``, into a
    temporary folder under ``base`` and move the results into place, unless ``base/<split>.json``
    already exists. Safe under concurrent callers (e.g. several training processes): the JSON
    appears last and marks completion. Returns the JSON path."""
    json_file = base / f"{split}.json"
    if json_file.is_file():
        return json_file
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=base))
    except OSError as e:  # a file on the path, no permission, read-only file system, ...
        raise DatasetRootError(
            f"cannot generate the synthetic dataset in {base}: {e.strerror or e}; set DETECTRON2_DATASETS "
            f"(now {os.environ.get('DETECTRON2_DATASETS', 'unset: ./datasets')}) to a writable folder"
        ) from e
    logger.info(f"generating {base / split} (first use; reused afterwards) ...")
    start = time.perf_counter()
    try:
        write(tmp)
        try:
            (tmp / split).rename(base / split)
        except OSError:  # another process finished first
            if not (base / split).is_dir():
                raise
        (tmp / f"{split}.json").replace(json_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"generated {base / split} in {time.perf_counter() - start:.0f} s")
    return json_file


def shape_class_metadata() -> dict:
    """Metadata of the shape classes shared by the synthetic image and video datasets."""
    return {
        "thing_classes": list(CLASS_NAMES),
        "thing_colors": [list(c) for c in CLASS_COLORS],
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(CLASS_NAMES))},
    }


def shape_categories() -> list[dict]:
    """The JSON ``categories`` of the synthetic image and video datasets (ids start at 1)."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]


def ensure_split(
    prefix: str,
    base: Path,
    split: str,
    splits: dict,
    write_split: Callable[[Path, str, Any], None],
    image_subdir: str = "",
) -> tuple[Path, Path]:
    """Generate ``split`` of the synthetic dataset ``prefix`` under ``base`` with
    ``write_split(out_dir, split, splits[split])`` if absent (see :func:`generate_once`); return
    (json file, image root ``base/<split>/<image_subdir>``)."""
    if split not in splits:
        raise KeyError(f"unknown {prefix} split {split!r}; known: {sorted(splits)}")
    json_file = generate_once(base, split, lambda out: write_split(out, split, splits[split]))
    return json_file, base / split / image_subdir


def register_generated_splits(
    prefix: str,
    base: Path,
    splits: dict,
    write_split: Callable[[Path, str, Any], None],
    load_json: Callable[[str, str, str], list[dict]],
    evaluator_type: str,
    image_subdir: str = "",
) -> None:
    """Register ``<prefix>_<split>`` for every split of a synthetic dataset under ``base`` (names
    already registered are skipped). Loading one generates it if absent (:func:`ensure_split`) and
    reads it with ``load_json(json_file, image_root, dataset_name)``."""
    for split in splits:
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            continue

        def load(split: str = split, name: str = name) -> list[dict]:
            json_file, image_root = ensure_split(prefix, base, split, splits, write_split, image_subdir)
            return load_json(str(json_file), str(image_root), name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=str(base / f"{split}.json"),
            image_root=str(base / split / image_subdir),
            evaluator_type=evaluator_type,
            **shape_class_metadata(),
        )


def ensure_generated(split: str, base: Path | None = None) -> tuple[Path, Path]:
    """Generate ``split`` under ``base`` (default: :func:`dataset_dir`) if absent; return
    (json file, image root)."""
    return ensure_split("synthetic_shapes", base or dataset_dir(), split, SPLITS, write_split)


def register_synthetic_shapes(root: Path | None = None) -> None:
    """Register ``synthetic_shapes_{train,val,tiny}`` under ``root`` (default
    ``$DETECTRON2_DATASETS``); the files are generated when a dataset is first loaded."""
    register_generated_splits(
        "synthetic_shapes", dataset_dir(root), SPLITS, write_split, load_coco_json, "coco"
    )
