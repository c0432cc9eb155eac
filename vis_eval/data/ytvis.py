"""YouTube-VIS 2019 / 2021 / 2022 and OVIS: category metadata, loading and registration (spec §1, §2, §5).

One dataset dict per video::

    {"video_id": int, "file_names": [str] * T, "height": int, "width": int, "length": T,
     "annotations": [[{"id", "category_id", "bbox", "bbox_mode", "segmentation", "iscrowd"}, ...]] * T}

``annotations[t]`` lists the objects visible in frame ``t``: an object whose ``bboxes[t]`` or
``segmentations[t]`` is null/empty in the JSON has no dict in that frame. ``id`` is the track id
(the JSON annotation id), ``category_id`` the contiguous index, ``segmentation`` a compressed RLE
(``counts`` as str) or a polygon list.
"""

from __future__ import annotations

import colorsys
import logging
import os
from typing import Any

import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..file_io import read_json
from ..rle import json_rle, segm_to_rle

__all__ = [
    "YTVIS_2019_CATEGORIES",
    "YTVIS_2021_CATEGORIES",
    "OVIS_CATEGORIES",
    "YTVIS_2019_TO_2021",
    "YTVIS_2021_TO_2019",
    "get_ytvis_metadata",
    "load_ytvis_json",
    "register_ytvis_instances",
    "register_all_ytvis",
]

logger = logging.getLogger(__name__)

_NAMES_2019 = (
    "person giant_panda lizard parrot skateboard sedan ape dog snake monkey hand rabbit duck cat cow "
    "fish train horse turtle bear motorbike giraffe leopard fox deer owl surfboard airplane truck zebra "
    "tiger elephant snowboard boat shark mouse frog eagle earless_seal tennis_racket"
).split()
_NAMES_2021 = (
    "airplane bear bird boat car cat cow deer dog duck earless_seal elephant fish flying_disc fox frog "
    "giant_panda giraffe horse leopard lizard monkey motorbike mouse parrot person rabbit shark "
    "skateboard snake snowboard squirrel surfboard tennis_racket tiger train truck turtle whale zebra"
).split()
_NAMES_OVIS = (
    "Person Bird Cat Dog Horse Sheep Cow Elephant Bear Zebra Giraffe Poultry Giant_panda Lizard Parrot "
    "Monkey Rabbit Tiger Fish Turtle Bicycle Motorcycle Airplane Boat Vehical"
).split()


def _colors(n: int) -> list[list[int]]:
    """Distinct deterministic RGB colours (golden-ratio hue steps)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        out.append([int(255 * r), int(255 * g), int(255 * b)])
    return out


def _categories(names: list[str]) -> list[dict]:
    colors = _colors(len(names))
    return [{"id": i + 1, "name": n, "color": colors[i], "isthing": 1} for i, n in enumerate(names)]


YTVIS_2019_CATEGORIES: list[dict] = _categories(_NAMES_2019)
YTVIS_2021_CATEGORIES: list[dict] = _categories(_NAMES_2021)
OVIS_CATEGORIES: list[dict] = _categories(_NAMES_OVIS)

# dataset ids of the 35 categories shared by name (spec §1.3); 2021 ids are alphabetical
YTVIS_2019_TO_2021: dict[int, int] = {
    i + 1: _NAMES_2021.index(n) + 1 for i, n in enumerate(_NAMES_2019) if n in _NAMES_2021
}
YTVIS_2021_TO_2019: dict[int, int] = {v: k for k, v in YTVIS_2019_TO_2021.items()}


def get_ytvis_metadata(kind: str) -> dict[str, Any]:
    """Metadata of ``kind`` in ``{"ytvis_2019", "ytvis_2021", "ytvis_2022", "ovis"}``."""
    cats = {
        "ytvis_2019": YTVIS_2019_CATEGORIES,
        "ytvis_2021": YTVIS_2021_CATEGORIES,
        "ytvis_2022": YTVIS_2021_CATEGORIES,
        "ovis": OVIS_CATEGORIES,
    }.get(kind)
    if cats is None:
        raise KeyError(f"unknown YouTube-VIS kind {kind!r}")
    meta: dict[str, Any] = {
        "thing_classes": [c["name"] for c in cats],
        "thing_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    if kind != "ovis":
        meta["ytvis_2019_to_2021"] = dict(YTVIS_2019_TO_2021)
        meta["ytvis_2021_to_2019"] = dict(YTVIS_2021_TO_2019)
    return meta


# ----------------------------------------------------------------------------- loading
def _read_json(json_file: str) -> dict:
    try:
        data = read_json(json_file)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"YouTube-VIS annotation file not found: {json_file} (set $DETECTRON2_DATASETS or check the layout)"
        ) from e
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a JSON object with 'videos' and 'categories'")
    for key in ("videos", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{json_file}: missing or invalid '{key}' list")
    anns = data.get("annotations")
    if anns is not None and not isinstance(anns, list):
        raise ValueError(f"{json_file}: 'annotations' must be a list")
    return data


def _frame_segmentation(segm: Any) -> Any:
    """A JSON per-frame segmentation as a compressed RLE (str counts) or a cleaned polygon list;
    None if nothing usable remains."""
    if isinstance(segm, dict):  # an RLE, compressed or not, at its own size
        return json_rle(segm_to_rle(segm, *segm.get("size", (0, 0))))
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]
        return polys or None
    raise ValueError(f"unsupported segmentation type {type(segm).__name__}")


def load_ytvis_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
) -> list[dict]:
    """Load a YouTube-VIS-format JSON as one dict per video (videos in increasing id order).

    With ``dataset_name``, the metadata's ``thing_dataset_id_to_contiguous_id`` maps categories; if the
    dataset has none yet, it and ``thing_classes`` are set from the JSON categories (sorted by id).
    Raises FileNotFoundError for a missing file and ValueError for malformed JSON or schema errors.
    """
    data = _read_json(json_file)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    id_map = meta.get("thing_dataset_id_to_contiguous_id") if meta is not None else None
    if id_map is None:
        id_map = {c["id"]: i for i, c in enumerate(cats)}
        if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
            logger.warning(f"{json_file}: category ids are not 1..{len(cats)}; mapping them in sorted order")
        if meta is not None:
            meta.set(thing_classes=[c["name"] for c in cats], thing_dataset_id_to_contiguous_id=id_map)
    else:
        unknown = sorted({c["id"] for c in cats} - set(id_map))
        if unknown:
            raise ValueError(f"{json_file}: categories {unknown} are not in the metadata of {dataset_name!r}")

    videos: dict[int, dict] = {}
    for v in data["videos"]:
        try:
            vid, names = v["id"], v["file_names"]
            h, w = int(v["height"]), int(v["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{json_file}: video record {str(v)[:80]} lacks id/file_names/height/width"
            ) from e
        if vid in videos:
            raise ValueError(f"{json_file}: duplicate video id {vid}")
        length = int(v.get("length", len(names)))
        if length != len(names):
            logger.warning(f"{json_file}: video {vid} has length {length} but {len(names)} file names")
        videos[vid] = {
            "video_id": vid,
            "file_names": [os.path.join(image_root, n) for n in names],
            "height": h,
            "width": w,
            "length": len(names),
            "annotations": [[] for _ in names],
        }

    extra = list(extra_annotation_keys or [])
    n_dropped = n_mismatch = 0
    for k, ann in enumerate(data.get("annotations") or []):
        try:
            vid, cat = ann["video_id"], ann["category_id"]
            segms = ann["segmentations"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{json_file}: annotation #{k} lacks video_id/category_id/segmentations") from e
        if vid not in videos:
            raise ValueError(f"{json_file}: annotation #{k} refers to unknown video id {vid}")
        if cat not in id_map:
            raise ValueError(f"{json_file}: annotation #{k} has unknown category id {cat}")
        video = videos[vid]
        frames = video["annotations"]
        bboxes = ann.get("bboxes")
        if len(segms) != len(frames) or (bboxes is not None and len(bboxes) != len(segms)):
            n_mismatch += 1
        for t in range(min(len(segms), len(frames))):
            segm = segms[t]
            box = bboxes[t] if bboxes is not None and t < len(bboxes) else None
            if not segm or (bboxes is not None and not box):
                continue  # absent in this frame
            try:
                segm = _frame_segmentation(segm)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{json_file}: annotation #{k}, frame {t}: {e}") from e
            if segm is None:
                n_dropped += 1
                continue
            if box is None:  # no 'bboxes' in the JSON: derive the box from the mask
                box = mask_util.toBbox(segm_to_rle(segm, video["height"], video["width"])).tolist()
            obj = {
                "id": ann.get("id"),
                "category_id": id_map[cat],
                "bbox": [float(x) for x in box],
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": segm,
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            for key in extra:
                if key in ann:
                    obj[key] = ann[key]
            frames[t].append(obj)
    if n_dropped:
        logger.warning(f"{json_file}: {n_dropped} object frames without a valid polygon were dropped")
    if n_mismatch:
        logger.warning(f"{json_file}: {n_mismatch} annotations have per-frame lists of the wrong length")
    out = [videos[v] for v in sorted(videos)]
    logger.info(f"Loaded {len(out)} videos from {json_file}")
    return out


# ----------------------------------------------------------------------------- registration
def register_ytvis_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a YouTube-VIS-format dataset; nothing is read until the dataset is loaded."""
    DatasetCatalog.register(name, lambda: load_ytvis_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="ytvis", **metadata
    )


# name -> (metadata kind, image root, json file), relative to the datasets root
_PREDEFINED: dict[str, tuple[str, str, str]] = {
    "ytvis_2019_train": ("ytvis_2019", "ytvis_2019/train/JPEGImages", "ytvis_2019/train.json"),
    "ytvis_2019_val": ("ytvis_2019", "ytvis_2019/valid/JPEGImages", "ytvis_2019/valid.json"),
    "ytvis_2019_test": ("ytvis_2019", "ytvis_2019/test/JPEGImages", "ytvis_2019/test.json"),
    "ytvis_2021_train": ("ytvis_2021", "ytvis_2021/train/JPEGImages", "ytvis_2021/train.json"),
    "ytvis_2021_val": ("ytvis_2021", "ytvis_2021/valid/JPEGImages", "ytvis_2021/valid.json"),
    "ytvis_2021_test": ("ytvis_2021", "ytvis_2021/test/JPEGImages", "ytvis_2021/test.json"),
    # [unverified layouts, spec §2.5]
    "ytvis_2022_val": ("ytvis_2022", "ytvis_2022/valid/JPEGImages", "ytvis_2022/valid.json"),
    "ytvis_2022_test": ("ytvis_2022", "ytvis_2022/test/JPEGImages", "ytvis_2022/test.json"),
    "ovis_train": ("ovis", "ovis/train", "ovis/annotations/annotations_train.json"),
    "ovis_val": ("ovis", "ovis/valid", "ovis/annotations/annotations_valid.json"),
    "ovis_test": ("ovis", "ovis/test", "ovis/annotations/annotations_test.json"),
}


def register_all_ytvis(root: str | None = None) -> None:
    """Register the predefined YouTube-VIS / OVIS splits under ``root`` (default ``$DETECTRON2_DATASETS``,
    else ``./datasets``). Names already registered are skipped; no file is touched."""
    if root is None:
        root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    registered = set(DatasetCatalog.list())
    for name, (kind, image_root, json_file) in _PREDEFINED.items():
        if name in registered:
            continue
        json_path = json_file if "://" in json_file else os.path.join(root, json_file)
        register_ytvis_instances(name, get_ytvis_metadata(kind), json_path, os.path.join(root, image_root))
