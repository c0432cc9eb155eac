#!/usr/bin/env python
"""Train or evaluate any onestage-seg model (CenterMask, SipMask, ...) on image or video datasets.

    python train_net.py --config-file configs/CenterMask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \
        --num-gpus 8 [KEY VALUE ...]
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pth

Config overrides are trailing ``KEY VALUE`` pairs (``--opts KEY VALUE ...`` is accepted too).
``--eval-only`` refuses weights that do not fit the model (``MODEL.WEIGHTS_PARTIAL True`` loads what
fits); training loads them partially (ImageNet backbones), as Detectron2 does. Errors of the input
(config, weights, datasets) end with one line.

Image datasets are evaluated COCO-style (masks ranked by ``mask_scores`` where a model has them);
video datasets (metadata ``evaluator_type == "ytvis"``) go through the streaming video runner and
the YouTube-VIS evaluator. ``--num-gpus N`` without CUDA runs N CPU processes (gloo).
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
import detectron2.utils.comm as comm
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import (
    DefaultTrainer,
    PeriodicCheckpointer,
    SimpleTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.evaluation import DatasetEvaluator, verify_results
from detectron2.utils.logger import setup_logger

from onestage.checkpoint import StrictCheckpointer
from onestage.cli import exit_on_user_error, split_overrides
from onestage.config import load_config
from onestage.data import build_train_loader, is_video_dataset
from onestage.engine import SkipNonFiniteTrainer
from onestage.evaluation import MaskScoreCOCOEvaluator
from vis_eval.evaluation.video_inference import evaluate_video_dataset


class CPUAutocastTrainer(SimpleTrainer):
    """Mixed precision on CPU: bfloat16 autocast (same exponent range as float32, so no grad scaler)."""

    def run_step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            super().run_step()


def _create_cpu_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    # DDP refuses device_ids for CPU modules; Detectron2's create_ddp_model always passes them.
    return create_ddp_model(model, device_ids=None, **kwargs)


class Trainer(DefaultTrainer):
    """DefaultTrainer that also trains multi-process and with AMP on CPU, picks the training mapper
    by ``INPUT.DATASET_MAPPER_NAME`` (clips for video datasets) and evaluates video datasets."""

    def __init__(self, cfg: CfgNode):
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        if on_cpu and comm.get_world_size() > 1:
            d2_defaults.create_ddp_model = _create_cpu_ddp_model
        try:
            super().__init__(cfg)
        finally:
            d2_defaults.create_ddp_model = create_ddp_model
        # one-line errors for a missing / corrupt MODEL.WEIGHTS; mismatched keys are logged (partial)
        self.checkpointer = StrictCheckpointer(
            self.checkpointer.model, cfg.OUTPUT_DIR, partial=True, **self.checkpointer.checkpointables
        )
        for hook in self._hooks:
            if isinstance(hook, PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer
        trainer = self._trainer
        if on_cpu and cfg.SOLVER.AMP.ENABLED:  # Detectron2's AMPTrainer needs CUDA
            self._trainer = CPUAutocastTrainer(trainer.model, trainer.data_loader, trainer.optimizer)
        elif cfg.SOLVER.SKIP_NON_FINITE_STEPS and not cfg.SOLVER.AMP.ENABLED:  # AMP's scaler skips already
            self._trainer = SkipNonFiniteTrainer(trainer.model, trainer.data_loader, trainer.optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_train_loader(cfg)

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
        return MaskScoreCOCOEvaluator(
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
    setup_logger(name="onestage", distributed_rank=comm.get_rank())
    with exit_on_user_error("train_net.py"):
        cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="vis_eval")
    return cfg


def main(args):
    cfg = setup(args)
    with exit_on_user_error("train_net.py"):
        if args.eval_only:
            model = Trainer.build_model(cfg)
            if not cfg.MODEL.WEIGHTS:
                setup_logger(name=__name__).warning("--eval-only without MODEL.WEIGHTS: random weights")
            StrictCheckpointer(
                model, save_dir=cfg.OUTPUT_DIR, partial=cfg.MODEL.WEIGHTS_PARTIAL
            ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
            results = Trainer.test(cfg, model)
            if comm.is_main_process():
                verify_results(cfg, results)
            return results
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()


def parse_args(argv: list[str] | None = None):
    """Detectron2's ``default_argument_parser``; overrides as trailing pairs or after ``--opts``."""
    own, overrides = split_overrides(
        sys.argv[1:] if argv is None else argv,
        ("--config-file", "--num-gpus", "--num-machines", "--machine-rank", "--dist-url"),
    )
    args = default_argument_parser().parse_args(own)
    args.opts = list(args.opts) + overrides
    return args


def invoke_main() -> None:
    args = parse_args()
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
