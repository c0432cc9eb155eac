"""Video and image data of vis_eval: YouTube-VIS / OVIS, the synthetic datasets, the clip mapper.

Importing this package registers the builtin datasets (generated or read lazily, on first use):
``synthetic_shapes_*`` (images), ``synthetic_vis_*`` (videos), ``ytvis_{2019,2021,2022}_*`` and
``ovis_*`` under ``$DETECTRON2_DATASETS``. The torch-free RLE and JSON helpers the loaders use live in
:mod:`vis_eval.rle` and :mod:`vis_eval.file_io`, so that evaluation can use them without this import.
"""

from .synthetic import register_synthetic_shapes
from .synthetic_video import register_synthetic_vis
from .ytvis import register_all_ytvis

register_synthetic_shapes()
register_synthetic_vis()
register_all_ytvis()
