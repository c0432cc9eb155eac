"""COCO evaluation that ranks masks by ``mask_scores`` where a model has them (CenterMask's MaskIoU,
SipMask++'s re-scoring); every image model is evaluated with it."""

from __future__ import annotations

import itertools
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco, instances_to_coco_json
from detectron2.utils.file_io import PathManager
from pycocotools.cocoeval import COCOeval

__all__ = ["MaskScoreCOCOEvaluator"]


class MaskScoreCOCOEvaluator(COCOEvaluator):
    """:class:`COCOEvaluator` whose segm task scores each result by its ``mask_score``.

    Results of instances that carry ``mask_scores`` get a ``"mask_score"`` entry (also written to
    ``coco_instances_results.json``); the bbox task keeps the box ``"score"``. Always uses the
    official pycocotools ``COCOeval`` (no Detectron2 C++ extension needed).
    """

    def __init__(self, dataset_name: str, tasks=None, distributed: bool = True, output_dir=None, **kwargs):
        kwargs["use_fast_impl"] = False
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                continue
            instances = out["instances"].to(self._cpu_device)
            results = instances_to_coco_json(instances, inp["image_id"])
            if instances.has("mask_scores"):
                for result, mask_score in zip(results, instances.mask_scores.tolist(), strict=True):
                    result["mask_score"] = mask_score
            self._predictions.append({"image_id": inp["image_id"], "instances": results})

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            to_dataset_id = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
            for result in coco_results:
                result["category_id"] = to_dataset_id[result["category_id"]]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        for task in sorted(tasks):
            results = coco_results
            if task == "segm":
                results = [{**r, "score": r.get("mask_score", r["score"])} for r in coco_results]
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    cocoeval_fn=COCOeval,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if results
                else None
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )
