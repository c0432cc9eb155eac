"""``python -m vis_eval.evaluate GT.json RESULTS.json|results.zip [--per-category] [--json OUT]``.

Prints the exact YouTube-VIS video AP of a results file; see :mod:`vis_eval.evaluation.commands`.
"""

from .evaluation.commands import evaluate_main as main
from .evaluation.commands import run_command

__all__ = ["main"]

if __name__ == "__main__":
    run_command(main, fast_exit=True)  # the parsed files are millions of objects: not freed one by one
