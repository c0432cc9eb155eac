"""vis_eval: synthetic data, YouTube-VIS data and video evaluation for onestage-seg.

Importing the package registers the builtin datasets (generated or read lazily, on first use):
``synthetic_shapes_*`` (images), ``synthetic_vis_*`` (videos), ``ytvis_{2019,2021,2022}_*`` and
``ovis_*`` under ``$DETECTRON2_DATASETS``.
"""

from .synthetic import register_synthetic_shapes
from .synthetic_video import register_synthetic_vis
from .ytvis import register_all_ytvis

register_synthetic_shapes()
register_synthetic_vis()
register_all_ytvis()
