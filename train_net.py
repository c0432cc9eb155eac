#!/usr/bin/env python
"""Train or evaluate any onestage-seg model (CenterMask, SipMask, ...) on image or video datasets.

    python train_net.py --config-file configs/CenterMask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \
        --num-gpus 8 [KEY VALUE ...]
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pth

Image datasets are evaluated COCO-style (masks ranked by ``mask_scores`` where a model has them);
video datasets (metadata ``evaluator_type == "ytvis"``) go through the streaming video runner and
the YouTube-VIS evaluator. ``--num-gpus N`` without CUDA runs N CPU processes (gloo).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import detectron2.utils.comm as comm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.evaluation import DatasetEvaluator, verify_results
from detectron2.utils.logger import setup_logger

import vis_eval  # noqa: F401  (registers the builtin synthetic and video datasets)
from centermask import add_centermask_config
from centermask.evaluation import CenterMaskCOCOEvaluator
from sipmask import add_sipmask_config
from sipmask.data import build_sipmask_train_mapper
from vis_eval.config import add_vis_eval_config
from vis_eval.runner import evaluate_video_dataset


class CPUAutocastTrainer(SimpleTrainer):
    """Mixed precision on CPU: bfloat16 autocast (same exponent range as float32, so no grad scaler)."""

    def run_step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            super().run_step()


def is_video_dataset(dataset_name: str) -> bool:
    return MetadataCatalog.get(dataset_name).get("evaluator_type") == "ytvis"


class Trainer(DefaultTrainer):
    """DefaultTrainer that also runs multi-process on CPU, AMP on CPU, and video evaluation."""

    def __init__(self, cfg: CfgNode):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cuda = next(model.parameters()).is_cuda
        # DDP wants device_ids only for single-device CUDA modules
        device_ids = [comm.get_local_rank()] if on_cuda else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        if not cfg.SOLVER.AMP.ENABLED:
            self._trainer = SimpleTrainer(model, data_loader, optimizer)
        elif on_cuda:
            self._trainer = AMPTrainer(model, data_loader, optimizer)
        else:
            self._trainer = CPUAutocastTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        # the real-time SipMask configs ask for their SSD-style augmentation; others use DatasetMapper
        return build_detection_train_loader(cfg, mapper=build_sipmask_train_mapper(cfg))

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        metadata = MetadataCatalog.get(dataset_name)
        evaluator_type = metadata.get("evaluator_type")
        if evaluator_type != "coco":
            raise ValueError(
                f"no image evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
                "image datasets need evaluator_type 'coco'"
            )
        json_file = metadata.get("json_file")
        if json_file and not os.path.isfile(json_file):
            DatasetCatalog.get(dataset_name)  # datasets generated on first use write their json here
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        # use_fast_impl needs Detectron2's compiled _C, which this project does not install
        return CenterMaskCOCOEvaluator(
            dataset_name, tasks=tasks, output_dir=output_folder, use_fast_impl=False
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None) -> OrderedDict:
        """Evaluate on every dataset of ``cfg.DATASETS.TEST``: images with COCO AP, videos with video AP."""
        results: OrderedDict = OrderedDict()
        image_datasets = [name for name in cfg.DATASETS.TEST if not is_video_dataset(name)]
        if image_datasets:
            image_cfg = cfg.clone()
            image_cfg.defrost()
            image_cfg.DATASETS.TEST = tuple(image_datasets)
            image_results = super().test(image_cfg, model, evaluators)
            if len(image_datasets) == 1:
                image_results = {image_datasets[0]: image_results}
            results.update(image_results)
        for name in cfg.DATASETS.TEST:
            if is_video_dataset(name):
                output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
                results[name] = evaluate_video_dataset(cfg, model, name, output_dir)
        if len(results) == 1:
            return list(results.values())[0]
        return results


def setup(args) -> CfgNode:
    cfg = get_cfg()
    add_centermask_config(cfg)
    add_sipmask_config(cfg)
    add_vis_eval_config(cfg)
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file not found: {args.config_file}")
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: running on CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="vis_eval")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
