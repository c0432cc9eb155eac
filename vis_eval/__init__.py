"""vis_eval: video instance segmentation data, streaming video inference and YouTube-VIS evaluation.

By role (importing ``vis_eval`` itself imports nothing, neither torch nor Detectron2):

* :mod:`vis_eval.data`: dataset registration (on import), synthetic datasets, the clip mapper;
* :mod:`vis_eval.video`: frame sources, the streaming runner, per-video results, trackers;
* :mod:`vis_eval.evaluation`: the exact YouTube-VIS video AP, results files, ``YTVISEvaluator``;
* :mod:`vis_eval.rle`, :mod:`vis_eval.file_io`: torch-free RLE and JSON / zip helpers;
* :mod:`vis_eval.config`: ``add_vis_eval_config(cfg)``;
* ``python -m vis_eval.evaluate`` / ``python -m vis_eval.validate``: the commands (no torch).
"""
