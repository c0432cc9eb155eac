"""SipMask (image): Detectron2 meta-architecture ``SipMask``, its caffe ResNet / FPN backbone and head."""

from . import data, modeling  # noqa: F401  (modeling registers the meta-architecture and backbones)
from .config import add_sipmask_config

__all__ = ["add_sipmask_config"]
