"""YouTube-VIS loading and registration: absent frames, mask formats, errors, metadata."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from vis_eval.data.ytvis import (
    OVIS_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2019_TO_2021,
    YTVIS_2021_CATEGORIES,
    YTVIS_2021_TO_2019,
    get_ytvis_metadata,
    load_ytvis_json,
    register_all_ytvis,
    register_ytvis_instances,
)
from vis_eval.rle import mask_to_uncompressed_rle

H, W = 8, 10


def _rle(rows, cols, compressed=True):
    m = np.zeros((H, W), np.uint8, order="F")
    m[:rows, :cols] = 1
    if not compressed:
        return mask_to_uncompressed_rle(m)
    return {"size": [H, W], "counts": mask_util.encode(m)["counts"].decode()}


def _write(tmp_path, data, name="train.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _annotations():
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, 5.0]]
    return [
        {  # track 11 in video 7: frames 0 (uncompressed RLE), 1 absent (null), 2 compressed RLE
            "id": 11,
            "video_id": 7,
            "category_id": 2,
            "iscrowd": 0,
            "segmentations": [_rle(2, 3, compressed=False), None, _rle(3, 3)],
            "bboxes": [[0, 0, 3, 2], None, [0, 0, 3, 3]],
            "areas": [6, None, 9],
        },
        {  # track 12 in video 7: polygon in frame 1; frame 2 has a mask but a null box -> absent
            "id": 12,
            "video_id": 7,
            "category_id": 1,
            "iscrowd": 1,
            "segmentations": [None, poly, _rle(1, 1)],
            "bboxes": [None, [1, 1, 5, 4], None],
            "areas": [None, 20, None],
        },
        {  # track 13 in video 3 (only a degenerate polygon -> dropped)
            "id": 13,
            "video_id": 3,
            "category_id": 1,
            "segmentations": [[[1.0, 1.0, 2.0, 2.0]]],
            "bboxes": [[1, 1, 1, 1]],
            "areas": [1],
        },
    ]


def _data(annotations=True):
    data = {
        "info": {},
        "videos": [
            {
                "id": 7,
                "file_names": [f"vid7/{i * 5:05d}.jpg" for i in range(3)],
                "height": H,
                "width": W,
                "length": 3,
            },
            {"id": 3, "file_names": ["vid3/00000.jpg"], "height": H, "width": W, "length": 1},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    if annotations:
        data["annotations"] = _annotations()
    return data


def test_load_video_dicts(tmp_path):
    videos = load_ytvis_json(_write(tmp_path, _data()), "/img")
    assert [v["video_id"] for v in videos] == [3, 7]  # sorted by id
    v3, v7 = videos
    assert v3["annotations"] == [[]]  # degenerate polygon dropped
    assert v7["file_names"] == [os.path.join("/img", f"vid7/{i * 5:05d}.jpg") for i in range(3)]
    assert (v7["height"], v7["width"], v7["length"]) == (H, W, 3)
    f0, f1, f2 = v7["annotations"]
    assert [o["id"] for o in f0] == [11]
    assert [o["id"] for o in f1] == [12]  # track 11 absent (null), track 12 present as polygon
    assert [o["id"] for o in f2] == [11]  # track 12 absent: null box
    o = f0[0]
    assert o["category_id"] == 1 and o["iscrowd"] == 0 and o["bbox_mode"] == BoxMode.XYWH_ABS
    assert o["bbox"] == [0.0, 0.0, 3.0, 2.0]
    assert isinstance(o["segmentation"]["counts"], str)  # uncompressed converted
    assert int(mask_util.area(o["segmentation"])) == 6
    assert f1[0]["segmentation"] == _annotations()[1]["segmentations"][1]
    assert f1[0]["category_id"] == 0 and f1[0]["iscrowd"] == 1


def test_load_without_annotations(tmp_path):
    for anns in (None, [], "absent"):
        data = _data(annotations=False)
        if anns != "absent":
            data["annotations"] = anns
        videos = load_ytvis_json(_write(tmp_path, data), str(tmp_path))
        assert [v["annotations"] for v in videos] == [[[]], [[], [], []]]


def test_missing_bboxes_key_derives_boxes(tmp_path):
    data = _data()
    del data["annotations"][0]["bboxes"]
    v7 = load_ytvis_json(_write(tmp_path, data), "")[1]
    assert v7["annotations"][2][0]["bbox"] == [0.0, 0.0, 3.0, 3.0]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_ytvis_json(str(tmp_path / "nope.json"), "")
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [1, 2,,]}')
    with pytest.raises(ValueError, match="malformed JSON"):
        load_ytvis_json(str(bad), "")
    with pytest.raises(ValueError, match="'videos'"):
        load_ytvis_json(_write(tmp_path, {"categories": []}, "x.json"), "")
    data = _data()
    data["annotations"][0]["video_id"] = 99
    with pytest.raises(ValueError, match="unknown video id 99"):
        load_ytvis_json(_write(tmp_path, data, "y.json"), "")
    data = _data()
    data["annotations"][0]["category_id"] = 5
    with pytest.raises(ValueError, match="unknown category id 5"):
        load_ytvis_json(_write(tmp_path, data, "z.json"), "")


def test_registration_is_lazy_and_sets_metadata(tmp_path):
    name = "test_ytvis_lazy_missing"
    register_ytvis_instances(
        name, get_ytvis_metadata("ytvis_2019"), str(tmp_path / "missing.json"), str(tmp_path)
    )
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "ytvis" and meta.json_file.endswith("missing.json")
    with pytest.raises(FileNotFoundError):
        DatasetCatalog.get(name)
    # a dataset registered without categories gets them from the JSON on first load
    name2 = "test_ytvis_from_json"
    path = _write(tmp_path, _data())
    DatasetCatalog.register(name2, lambda: load_ytvis_json(path, str(tmp_path), name2))
    assert len(DatasetCatalog.get(name2)) == 2
    assert MetadataCatalog.get(name2).thing_classes == ["a", "b"]
    assert MetadataCatalog.get(name2).thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}


def test_register_all(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_all_ytvis()
    names = set(DatasetCatalog.list())
    for split in ("train", "val", "test"):
        assert f"ytvis_2019_{split}" in names and f"ytvis_2021_{split}" in names and f"ovis_{split}" in names
    meta = MetadataCatalog.get("ytvis_2021_val")
    assert meta.evaluator_type == "ytvis"
    assert meta.image_root.endswith(os.path.join("ytvis_2021", "valid", "JPEGImages"))
    assert meta.json_file.endswith(os.path.join("ytvis_2021", "valid.json"))
    assert meta.thing_classes[0] == "airplane" and len(meta.thing_classes) == 40
    assert MetadataCatalog.get("ytvis_2022_val").thing_classes == meta.thing_classes
    register_all_ytvis(str(tmp_path / "other"))  # already registered: skipped, no error
    assert MetadataCatalog.get("ytvis_2021_val").json_file == meta.json_file


def test_category_lists_and_mapping():
    assert [c["id"] for c in YTVIS_2019_CATEGORIES] == list(range(1, 41))
    assert (
        YTVIS_2019_CATEGORIES[0]["name"] == "person" and YTVIS_2019_CATEGORIES[-1]["name"] == "tennis_racket"
    )
    names21 = [c["name"] for c in YTVIS_2021_CATEGORIES]
    assert names21 == sorted(names21) and len(names21) == 40
    assert len(OVIS_CATEGORIES) == 25 and OVIS_CATEGORIES[-1]["name"] == "Vehical"
    spec = (
        "1:26 2:17 3:21 4:25 5:29 8:9 9:30 10:22 12:27 13:10 14:6 15:7 16:13 17:36 18:19 19:38 20:2 21:23 "
        "22:18 23:20 24:15 25:8 27:33 28:1 29:37 30:40 31:35 32:12 33:31 34:4 35:28 36:24 37:16 39:11 40:34"
    )
    assert YTVIS_2019_TO_2021 == {int(a): int(b) for a, b in (p.split(":") for p in spec.split())}
    assert {YTVIS_2019_CATEGORIES[a - 1]["name"] for a in set(range(1, 41)) - set(YTVIS_2019_TO_2021)} == {
        "ape",
        "eagle",
        "hand",
        "owl",
        "sedan",
    }
    assert all(YTVIS_2019_TO_2021[v] == k for k, v in YTVIS_2021_TO_2019.items())
    meta = get_ytvis_metadata("ytvis_2019")
    assert meta["thing_dataset_id_to_contiguous_id"][40] == 39 and len(meta["thing_colors"]) == 40
