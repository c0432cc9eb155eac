"""STMask modeling: backbone + FPN, protonet, FCA / FCB head, temporal fusion, losses, tracker and the
``STMask`` meta-architecture (registered in Detectron2's registries on import)."""

from .fpn import STMaskFPN, build_stmask_resnet_fpn_backbone
from .head import FeatureAlign, ProtoNet, STMaskHead
from .losses import STMaskLoss
from .meta_arch import STMask
from .temporal import TemporalNet
from .tracker import STMaskTracker

__all__ = [
    "FeatureAlign",
    "ProtoNet",
    "STMask",
    "STMaskFPN",
    "STMaskHead",
    "STMaskLoss",
    "STMaskTracker",
    "TemporalNet",
    "build_stmask_resnet_fpn_backbone",
]
