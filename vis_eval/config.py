"""Config keys of vis_eval: the video tracker and the training clip sampler."""

from detectron2.config import CfgNode


def add_vis_eval_config(cfg: CfgNode) -> None:
    """Add every vis_eval key to ``cfg`` in place.

    * ``TRACKER_HEADS.TRACKER_NAME``: the tracker (in Detectron2's ``TRACKER_HEADS_REGISTRY``) that the
      streaming runner builds for each video of an image model (video models associate themselves);
    * ``TRACKER_HEADS.MASK_IOU_TRACKER.*``: :class:`vis_eval.video.tracker.MaskIoUTracker`;
    * ``INPUT.SAMPLING_FRAME_{NUM,RANGE,SHUFFLE}``: :class:`vis_eval.data.video_mapper.VideoClipMapper`
      (Mask2Former's names).
    """
    if "TRACKER_HEADS" not in cfg:
        cfg.TRACKER_HEADS = CfgNode()
    cfg.TRACKER_HEADS.TRACKER_NAME = "MaskIoUTracker"
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER = CfgNode()
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.IOU_THRESHOLD = 0.3
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.SCORE_THRESHOLD = 0.05
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.MAX_AGE = 5
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.MATCH_CLASS = True

    cfg.INPUT.SAMPLING_FRAME_NUM = 2
    cfg.INPUT.SAMPLING_FRAME_RANGE = 20
    cfg.INPUT.SAMPLING_FRAME_SHUFFLE = False
