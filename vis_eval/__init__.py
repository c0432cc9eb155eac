"""vis_eval: synthetic data, YouTube-VIS data and video evaluation for onestage-seg.

Importing the package registers the builtin datasets (generated or read lazily, on first use).
"""

from .synthetic import register_synthetic_shapes

register_synthetic_shapes()
