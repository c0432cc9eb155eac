"""Exact YouTube-VIS video AP: fast implementation, plain reference implementation, parameters."""

from .params import (
    STAT_NAMES,
    EvalParams,
    EvalResult,
    format_summary,
    load_gt,
    load_results,
    segm_to_rle,
    summarize,
)
from .reference import reference_evaluate
from .ytviseval import evaluate

__all__ = [
    "STAT_NAMES",
    "EvalParams",
    "EvalResult",
    "evaluate",
    "format_summary",
    "load_gt",
    "load_results",
    "reference_evaluate",
    "segm_to_rle",
    "summarize",
]
