"""``python -m vis_eval.evaluate GT.json RESULTS.json|results.zip [--per-category] [--json OUT]``.

Prints the exact YouTube-VIS video AP of a results file; see :mod:`vis_eval.evaluation.commands`.
"""

import os
import sys

from .evaluation.commands import evaluate_main as main

__all__ = ["main"]

if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): no traceback, but not done either
        status = 1
    # the parsed files are millions of objects: exit without freeing them one by one (the
    # command's output files are closed; only the standard streams need flushing)
    try:
        sys.stderr.flush()
    finally:
        os._exit(status)
