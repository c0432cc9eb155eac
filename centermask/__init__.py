"""CenterMask / CenterMask-Lite for Detectron2. Importing the package registers its components."""

from . import modeling
from .config import add_centermask_config

__all__ = ["add_centermask_config", "modeling"]
