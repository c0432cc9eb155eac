"""STMask meta-architecture (Li et al., CVPR 2021; spec stmask.md): YOLACT++-style one-stage video
instance segmentation with kernel-shaped anchors (FCA), box-calibrated classification (FCB), a
temporal fusion module and an embedding tracker."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import BitMasks, ImageList, PolygonMasks
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from onestage.inputs import normalize_images

from .box_ops import make_priors
from .head import ProtoNet, STMaskHead
from .inference import detect_frame
from .losses import STMaskLoss
from .postprocess import tracks_to_instances
from .temporal import TemporalNet, fusion_features
from .tracker import STMaskTracker

__all__ = ["STMask"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class STMask(nn.Module):
    """STMask: backbone + FPN (P3-P7), protonet on P3, the FCA head shared over the levels and the
    temporal fusion net (TemporalNet) on P4.

    Training input: 2-frame clips (``"image"``: [earlier, later] (C, H, W) tensors, ``"instances"``: two
    ``Instances`` with ``gt_boxes``, ``gt_classes``, ``gt_masks``, ``gt_ids``), e.g. from the
    ``STMaskClipMapper``; output: the losses of spec §3.5.

    Inference: frames of one video in order, one at a time (the streaming runner), each resized to
    ``FIXED_INPUT_SIZE_TEST`` ignoring its aspect ratio; output ``[{"instances"}]`` at the input's
    ``height`` / ``width`` with ``ID`` (track ids). :meth:`reset_video` starts a new video.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        proto_net: ProtoNet,
        head: STMaskHead,
        temporal_net: TemporalNet | None,
        criterion: STMaskLoss,
        tracker: STMaskTracker,
        in_features: list[str],
        correlation_feature: str,
        anchor_shapes: list[list[int]],
        pixel_mean: list[float],
        pixel_std: list[float],
        fixed_size_test: tuple[int, int] | None,
        detect_params: dict,
        score_thresh: float = 0.05,
        mask_thresh: float = 0.5,
        bn_train_from_iter: int = 100,
    ):
        super().__init__()
        self.backbone = backbone
        self.proto_net = proto_net
        self.head = head
        self.temporal_net = temporal_net
        self.criterion = criterion
        self.tracker = tracker
        self.in_features = list(in_features)
        self.correlation_feature = correlation_feature
        self.anchor_shapes = [tuple(s) for s in anchor_shapes]
        self.fixed_size_test = tuple(fixed_size_test) if fixed_size_test else None
        self.detect_params = dict(detect_params)
        self.score_thresh = score_thresh
        self.mask_thresh = mask_thresh
        self.bn_train_from_iter = bn_train_from_iter
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._priors: dict[tuple, Tensor] = {}
        # The authors' BN (spec §3.7): affine parameters always frozen; running statistics until
        # bn_train_from_iter, batch statistics from then on.
        self._batch_norms = [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in self._batch_norms:
            for p in bn.parameters():
                p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.STMASK
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in c.IN_FEATURES if f not in shapes]
        if missing or c.CORRELATION_FEATURE not in c.IN_FEATURES:
            raise ValueError(
                f"MODEL.STMASK.IN_FEATURES {list(c.IN_FEATURES)} / CORRELATION_FEATURE "
                f"{c.CORRELATION_FEATURE!r} must be among the backbone's outputs {sorted(shapes)}"
            )
        if c.FCB not in ("none", "ali", "ada"):
            raise ValueError(f"MODEL.STMASK.FCB must be 'none', 'ali' or 'ada', got {c.FCB!r}")
        proto_net = ProtoNet(cfg, shapes[c.IN_FEATURES[0]].channels)
        head = STMaskHead(cfg, [shapes[f] for f in c.IN_FEATURES])
        # FPN, protonet, head and TemporalNet are built with the authors' init (Xavier-uniform
        # weights, zero biases; spec §3.2), the ResNet with Detectron2's.
        temporal_net = TemporalNet(cfg) if c.TEMPORAL_FUSION else None
        return {
            "backbone": backbone,
            "proto_net": proto_net,
            "head": head,
            "temporal_net": temporal_net,
            "criterion": STMaskLoss(cfg),
            "tracker": STMaskTracker(cfg),
            "in_features": c.IN_FEATURES,
            "correlation_feature": c.CORRELATION_FEATURE,
            "anchor_shapes": c.ANCHOR_SHAPES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "fixed_size_test": c.FIXED_INPUT_SIZE_TEST or None,
            "detect_params": {
                "candidate_thresh": c.CANDIDATE_THRESH,
                "nms_top_k": c.NMS_TOP_K,
                "nms_thresh": c.NMS_THRESH,
                "cross_class": c.CROSS_CLASS_NMS,
                "max_detections": c.MAX_DETECTIONS,
                "score_thresh": c.SCORE_THRESH_TEST,
                "variances": tuple(c.BOX_VARIANCES),
            },
            "score_thresh": c.SCORE_THRESH_TEST,
            "mask_thresh": c.MASK_THRESH,
            "bn_train_from_iter": c.BN_TRAIN_FROM_ITER,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def reset_video(self) -> None:
        """Forget the previous video's tracks (the streaming runner calls this at each video start)."""
        self.tracker.reset()

    # ------------------------------------------------------------------ shared
    def preprocess_image(self, images: list[Tensor], fixed_size: tuple[int, int] | None) -> ImageList:
        """(C, H, W) frames -> normalised, optionally resized to ``fixed_size`` (bilinear), padded
        with zeros (after normalisation) to a multiple of 32."""
        return normalize_images(
            images, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility, fixed_size, "STMask"
        )

    def priors(self, features: list[Tensor]) -> Tensor:
        """(N, 4) anchors for the levels' feature sizes (cached per size and device)."""
        sizes = tuple(tuple(f.shape[-2:]) for f in features)
        key = (sizes, str(features[0].device))
        if key not in self._priors:
            self._priors[key] = make_priors(sizes, self.anchor_shapes, device=features[0].device)
        return self._priors[key]

    def _network(self, images: ImageList) -> tuple[dict, Tensor, Tensor, Tensor]:
        """(preds, proto (F, Hp, Wp, M), P4 (F, C, H4, W4), priors (N, 4))."""
        features = self.backbone(images.tensor)
        levels = [features[f] for f in self.in_features]
        preds = self.head(levels)
        proto = self.proto_net(levels[0])
        return preds, proto, features[self.correlation_feature], self.priors(levels)

    # ------------------------------------------------------------------ training
    def _set_bn_mode(self) -> None:
        if not self._batch_norms:
            return
        try:
            iteration = get_event_storage().iter
        except AssertionError:  # outside a trainer
            iteration = self.bn_train_from_iter
        use_batch_stats = self.training and iteration >= self.bn_train_from_iter
        for bn in self._batch_norms:
            bn.train(use_batch_stats)

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        for x in batched_inputs:
            if not isinstance(x.get("image"), (list, tuple)) or len(x["image"]) != 2 or "instances" not in x:
                raise ValueError(
                    "STMask trains on 2-frame clips: each input needs 'image' and 'instances' lists of "
                    "2 frames (INPUT.DATASET_MAPPER_NAME: STMaskClipMapper on a video dataset)"
                )
        self._set_bn_mode()
        frames = [img for x in batched_inputs for img in x["image"]]
        images = self.preprocess_image(frames, None)
        preds, proto, p4, priors = self._network(images)
        targets = self.prepare_targets(batched_inputs, images)
        fusion, temporal_fn = None, None
        if self.temporal_net is not None:
            fusion = fusion_features(p4[0::2], p4[1::2], preds["t2s"][0::2], preds["t2s"][1::2])
            temporal_fn = self.temporal_net
        return self.criterion(preds, proto, priors, targets, fusion, temporal_fn)

    def prepare_targets(self, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """Per frame (clip-major): ``boxes`` normalised by the padded size, ``labels`` 1-based,
        ``ids`` > 0 (one per (video, object) of the batch), ``masks`` (n, H_pad, W_pad) float."""
        pad_h, pad_w = images.tensor.shape[-2:]
        keys: dict[tuple, int] = {}
        targets = []
        for clip_idx, x in enumerate(batched_inputs):
            video = x.get("video_id", f"clip{clip_idx}")
            for inst, (h, w) in zip(x["instances"], images.image_sizes[2 * clip_idx : 2 * clip_idx + 2]):
                for field in ("gt_boxes", "gt_classes", "gt_masks", "gt_ids"):
                    if not inst.has(field):
                        raise ValueError(f"STMask training needs {field} in every frame's Instances")
                if tuple(inst.image_size) != (h, w):
                    raise ValueError(f"instances of size {inst.image_size} for a frame of size {(h, w)}")
                inst = inst.to(self.device)
                boxes = inst.gt_boxes.tensor.clone()
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                boxes = boxes / boxes.new_tensor([pad_w, pad_h, pad_w, pad_h])
                ids = [keys.setdefault((video, int(i)), len(keys) + 1) for i in inst.gt_ids.tolist()]
                targets.append(
                    {
                        "boxes": boxes,
                        "labels": inst.gt_classes.long() + 1,
                        "ids": torch.tensor(ids, dtype=torch.int64, device=self.device),
                        "masks": _padded_masks(inst.gt_masks, h, w, (pad_h, pad_w), self.device),
                    }
                )
        return targets

    # ------------------------------------------------------------------ inference
    def _shift(self, prev: dict, cur: dict, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Temporal fusion of the tracks' ``boxes`` (n, 4) from the frame ``prev`` to ``cur``:
        (box deltas (n, 4), coefficient deltas (n, M)); zeros without the module."""
        if self.temporal_net is None:
            m = cur["proto"].shape[-1]
            return boxes.new_zeros(boxes.shape), boxes.new_zeros((boxes.shape[0], m))
        z = fusion_features(prev["p4"], cur["p4"], prev["t2s"], cur["t2s"])
        batch_idx = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
        return self.temporal_net(z, boxes, batch_idx)

    def inference(self, batched_inputs: list[dict]) -> list[dict]:
        """The inputs are consecutive frames of the current video (usually one at a time)."""
        images = self.preprocess_image([x["image"] for x in batched_inputs], self.fixed_size_test)
        preds, proto, p4, priors = self._network(images)
        padded_hw = tuple(images.tensor.shape[-2:])
        conf = preds["conf"]
        results = []
        for i, x in enumerate(batched_inputs):
            dets = detect_frame(
                preds["loc"][i],
                conf[i],
                preds["centerness"][i],
                preds["track"][i],
                preds["mask_coeff"][i],
                priors,
                **self.detect_params,
            )
            frame = {"proto": proto[i], "p4": p4[i : i + 1], "t2s": preds["t2s"][i : i + 1]}
            tracks = self.tracker.update(dets, frame, self._shift)
            output_hw = (
                int(x.get("height", x["image"].shape[-2])),
                int(x.get("width", x["image"].shape[-1])),
            )
            instances = tracks_to_instances(
                tracks,
                input_hw=tuple(images.image_sizes[i]),
                padded_hw=padded_hw,
                output_hw=output_hw,
                score_thresh=self.score_thresh,
                mask_thresh=self.mask_thresh,
            )
            results.append({"instances": instances})
        return results


def _padded_masks(masks, h: int, w: int, padded_hw: tuple[int, int], device) -> Tensor:
    """(n, H_pad, W_pad) float 0/1 masks, zero-padded bottom / right."""
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, h, w)
    if not isinstance(masks, BitMasks):
        raise TypeError(f"gt_masks must be PolygonMasks or BitMasks, got {type(masks).__name__}")
    t = masks.tensor.to(device).float()
    return F.pad(t, (0, padded_hw[1] - t.shape[-1], 0, padded_hw[0] - t.shape[-2]))
