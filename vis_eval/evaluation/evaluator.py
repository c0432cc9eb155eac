"""Detectron2 ``DatasetEvaluator`` for YouTube-VIS-style video datasets (spec §5.7, §6.7).

Contract:

* ``process(inputs, outputs)``: ``inputs`` is a list of video dicts (each with ``"video_id"``);
  ``outputs`` the matching list of per-video result lists, each result
  ``{"video_id", "category_id" (dataset id), "score", "segmentations": [RLE or None] * T}``
  (the records :class:`vis_eval.video.VideoResultBuilder` produces).
* ``evaluate()``: gathers the results of all processes on the main one, writes ``results.json`` and
  the server's ``results.zip`` in ``output_dir``, and when the ground truth has annotations returns
  ``{"segm": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AP-<class>"...}}`` in percent
  (NaN for undefined values); other processes return ``{}``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict

import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..rle import segm_to_rle
from .params import format_summary, load_gt
from .results import normalize_results, write_results_json, write_submission_zip
from .ytviseval import evaluate

__all__ = ["YTVISEvaluator", "dataset_dicts_to_ytvis_gt"]

logger = logging.getLogger(__name__)

_REPORTED = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")


def dataset_dicts_to_ytvis_gt(videos: list[dict], metadata) -> dict:
    """A YouTube-VIS annotation dict (dataset category ids) from video dataset dicts
    (the format of :func:`vis_eval.data.ytvis.load_ytvis_json`), for datasets without a JSON file."""
    to_dataset = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
    classes = metadata.get("thing_classes", [])
    cats = [
        {"id": d, "name": classes[c] if c < len(classes) else str(d)} for c, d in sorted(to_dataset.items())
    ]
    out_videos, tracks = [], {}
    next_id = itertools.count(1_000_000_000)
    for v in videos:
        h, w, n = int(v["height"]), int(v["width"]), len(v["file_names"])
        out_videos.append(
            {"id": v["video_id"], "height": h, "width": w, "length": n, "file_names": list(v["file_names"])}
        )
        for t, objs in enumerate(v.get("annotations") or []):
            for obj in objs:
                tid = obj.get("id")
                key = (v["video_id"], tid if tid is not None else next(next_id))
                if key not in tracks:
                    tracks[key] = {
                        "id": key[1],
                        "video_id": v["video_id"],
                        "category_id": to_dataset[obj["category_id"]],
                        "iscrowd": int(obj.get("iscrowd", 0)),
                        "segmentations": [None] * n,
                        "bboxes": [None] * n,
                        "areas": [None] * n,
                    }
                segm = obj["segmentation"]
                tr = tracks[key]
                tr["segmentations"][t] = segm
                tr["bboxes"][t] = list(obj["bbox"])
                tr["areas"][t] = int(mask_util.area(segm_to_rle(segm, h, w)))
    return {"videos": out_videos, "categories": cats, "annotations": list(tracks.values())}


class YTVISEvaluator(DatasetEvaluator):
    """Video AP on a registered YouTube-VIS-style dataset (``evaluator_type == "ytvis"``)."""

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        json_file: str | None = None,
        write_zip: bool = True,
    ) -> None:
        """
        Args:
            dataset_name: registered dataset; its metadata needs ``thing_dataset_id_to_contiguous_id``.
            tasks: unused (accepted for Detectron2 signature compatibility).
            distributed: gather results from all processes before evaluating.
            output_dir: where ``results.json`` / ``results.zip`` are written (nothing written if None).
            json_file: ground-truth JSON; default the metadata's ``json_file``, else the dataset dicts.
            write_zip: also write the server submission ``results.zip``.
        """
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._distributed = distributed
        self._output_dir = output_dir
        self._json_file = json_file or self._metadata.get("json_file")
        self._write_zip = write_zip
        self._predictions: list[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[list[dict]]) -> None:
        for video, results in zip(inputs, outputs):
            vid = video["video_id"]
            for r in results:
                if r.get("video_id", vid) != vid:
                    raise ValueError(f"result for video {r['video_id']} passed with input video {vid}")
            self._predictions.extend(normalize_results([dict(r, video_id=vid) for r in results]))

    def _ground_truth(self) -> dict | None:
        """The annotation dict, or None when the split has no annotations."""
        if self._json_file and os.path.isfile(self._json_file):
            gt = load_gt(self._json_file)
        else:
            gt = dataset_dicts_to_ytvis_gt(DatasetCatalog.get(self._dataset_name), self._metadata)
        return gt if gt.get("annotations") else None

    def evaluate(self) -> OrderedDict | dict:
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return {}
            # a video processed by several ranks keeps the records of the first one
            owner: dict[int, int] = {}
            predictions = []
            for rank, preds in enumerate(gathered):
                for r in preds:
                    if owner.setdefault(r["video_id"], rank) == rank:
                        predictions.append(r)
        else:
            predictions = self._predictions
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = write_results_json(predictions, os.path.join(self._output_dir, "results.json"))
            if self._write_zip:
                write_submission_zip(path, os.path.join(self._output_dir, "results.zip"))
            logger.info(f"Wrote {len(predictions)} video instances to {path}")
        if not predictions:
            logger.warning(f"[YTVISEvaluator] no predictions for {self._dataset_name}")
        gt = self._ground_truth()
        if gt is None:
            logger.info(f"{self._dataset_name} has no annotations: submit results.json to the server")
            return {}
        res = evaluate(gt, predictions)
        logger.info(f"Video AP on {self._dataset_name}:\n{format_summary(res.stats, res.params)}")
        stats = res.as_dict()
        segm = {name: stats[name] * 100 if stats[name] >= 0 else float("nan") for name in _REPORTED}
        names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
        for cat, ap in res.per_category_ap().items():
            segm[f"AP-{names.get(cat, cat)}"] = ap * 100  # NaN (no ground truth) stays NaN
        return OrderedDict(segm=segm)
