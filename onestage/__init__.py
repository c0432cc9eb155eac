"""onestage: the shared core of onestage-seg.

Layers (deformable conv, ``Scale``, IoU-family losses, NMS, box and distributed helpers), backbones
(VoVNetV2, MobileNetV2, FCOS FPNs, the per-block deformable ResNet), FCOS (locations, targets,
decoding, head and proposal generator), checkpoint helpers for the converters, COCO evaluation that
ranks masks by ``mask_scores``, the training-mapper registry and the project's ``get_cfg()``.
It depends on Detectron2, torchvision, fvcore and ``vis_eval`` only; importing it registers its
backbones and FCOS with Detectron2.
"""

from . import backbone, fcos, layers  # noqa: F401  (registers backbones and FCOS)
