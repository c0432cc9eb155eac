"""``python -m vis_eval.evaluate GT.json RESULTS.json|results.zip [--per-category] [--json OUT]``.

Prints the exact YouTube-VIS video AP of a results file; see :mod:`vis_eval.evaluation.commands`.
"""

import sys

from .evaluation.commands import evaluate_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
