"""YouTube-VIS evaluation: the exact video AP (fast and reference implementations), results files.

Importing this package imports neither torch nor Detectron2. The Detectron2 pieces are imported
only by those who need them: :class:`vis_eval.evaluation.evaluator.YTVISEvaluator` (a
``DatasetEvaluator``) and :func:`vis_eval.evaluation.video_inference.evaluate_video_dataset` (runs a
video dataset through the streaming runner and the evaluator).
"""

from .params import (
    STAT_NAMES,
    EvalParams,
    EvalResult,
    format_summary,
    load_gt,
    load_results,
    summarize,
)
from .reference import reference_evaluate
from .results import (
    ValidationReport,
    malformed_masks,
    normalize_results,
    validate_results,
    write_results_json,
    write_submission_zip,
)
from .ytviseval import evaluate

__all__ = [
    "STAT_NAMES",
    "EvalParams",
    "EvalResult",
    "ValidationReport",
    "evaluate",
    "format_summary",
    "load_gt",
    "load_results",
    "malformed_masks",
    "normalize_results",
    "reference_evaluate",
    "summarize",
    "validate_results",
    "write_results_json",
    "write_submission_zip",
]
