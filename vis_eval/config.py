"""Config keys of vis_eval: the mask-IoU tracker and the clip sampler."""

from detectron2.config import CfgNode

from .tracker import add_tracker_config
from .video_mapper import add_video_mapper_config


def add_vis_eval_config(cfg: CfgNode) -> None:
    """Add ``MODEL.MASK_IOU_TRACKER.*`` and ``INPUT.SAMPLING_FRAME_*`` to ``cfg`` in place."""
    add_tracker_config(cfg)
    add_video_mapper_config(cfg)
