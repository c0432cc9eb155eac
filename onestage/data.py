"""Training mappers chosen by name: ``INPUT.DATASET_MAPPER_NAME``.

Builtin entries: ``DatasetMapper`` (Detectron2's, the default) and ``VideoClipMapper`` (clips of a
video dataset, the same augmentation on every frame, ``gt_ids`` per instance). Methods register their
own (SipMask: ``SSDDatasetMapper``). A registered mapper is built as ``mapper_cls(cfg, is_train=True)``.
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, build_detection_train_loader
from detectron2.data.build import filter_images_with_only_crowd_annotations, get_detection_dataset_dicts
from detectron2.utils.registry import Registry

from vis_eval.data.video_mapper import VideoClipMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "EmptyTrainingSetError",
    "build_train_loader",
    "build_train_mapper",
    "image_training_dicts",
    "is_video_dataset",
]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = "Training mappers, built as ``mapper_cls(cfg, is_train=True)``."
DATASET_MAPPER_REGISTRY.register(DatasetMapper)
DATASET_MAPPER_REGISTRY.register(VideoClipMapper)


def build_train_mapper(cfg: CfgNode) -> Callable[[dict], dict]:
    """The training mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_REGISTRY:
        known = ", ".join(sorted(k for k, _ in DATASET_MAPPER_REGISTRY))
        raise KeyError(f"INPUT.DATASET_MAPPER_NAME {name!r} is not a registered mapper; known: {known}")
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train=True)


def is_video_dataset(dataset_name: str) -> bool:
    """Whether a registered dataset holds videos (metadata ``evaluator_type == "ytvis"``)."""
    return MetadataCatalog.get(dataset_name).get("evaluator_type") == "ytvis"


class EmptyTrainingSetError(ValueError):
    """``DATASETS.TRAIN`` has nothing to learn from (no image with an annotation)."""


def image_training_dicts(cfg: CfgNode) -> list[dict]:
    """The dataset dicts of the image datasets ``cfg.DATASETS.TRAIN`` as Detectron2's training loader
    would use them (images without usable annotations dropped when
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``); :class:`EmptyTrainingSetError` when no image has a
    non-crowd annotation."""
    names = list(cfg.DATASETS.TRAIN)
    min_keypoints = cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
    proposals = cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None
    dicts = get_detection_dataset_dicts(
        names, filter_empty=False, min_keypoints=min_keypoints, proposal_files=proposals
    )
    annotated = sum(any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", ())) for d in dicts)
    if not annotated:
        raise EmptyTrainingSetError(
            f"nothing to train on: none of the {len(dicts)} images of DATASETS.TRAIN {names} has an "
            "annotated (non-crowd) instance; check the annotation file and its image / category ids"
        )
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    return dicts


def build_train_loader(cfg: CfgNode):
    """Detectron2's training loader over ``cfg.DATASETS.TRAIN`` with the mapper of
    :func:`build_train_mapper`.

    Image datasets go through Detectron2's dataset filtering and aspect-ratio grouping. Video
    datasets (the video-model contract): every video dict is one item, the clip mapper turns it into
    a clip of ``INPUT.SAMPLING_FRAME_NUM`` frames (``"image"``: T tensors (C, H, W), ``"instances"``:
    T ``Instances`` with ``gt_ids``, the same augmentation on every frame) and a batch is
    ``SOLVER.IMS_PER_BATCH`` clips in total over all processes.
    """
    names = list(cfg.DATASETS.TRAIN)
    videos = [is_video_dataset(n) for n in names]
    mapper = build_train_mapper(cfg)
    video_mapper = isinstance(mapper, VideoClipMapper)
    if not any(videos):
        if video_mapper:
            raise ValueError(f"VideoClipMapper needs video datasets; DATASETS.TRAIN = {names} holds images")
        return build_detection_train_loader(cfg, mapper=mapper, dataset=image_training_dicts(cfg))
    if not all(videos):
        raise ValueError(f"DATASETS.TRAIN mixes image and video datasets: {names}")
    if not video_mapper:
        raise ValueError(
            f"DATASETS.TRAIN = {names} holds videos: set INPUT.DATASET_MAPPER_NAME to a clip mapper "
            f"(e.g. VideoClipMapper), not {cfg.INPUT.DATASET_MAPPER_NAME!r}"
        )
    dataset = [video for name in names for video in DatasetCatalog.get(name)]
    if not dataset:
        raise ValueError(f"DATASETS.TRAIN = {names} has no videos")
    return build_detection_train_loader(
        dataset,
        mapper=mapper,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
