"""``python -m vis_eval.validate RESULTS.json|results.zip GT.json|DATASET_NAME [--max-messages N]``.

Checks a results file before evaluation or upload (exit status 1 when it has errors); see
:mod:`vis_eval.evaluation.commands`.
"""

import os
import sys

from .evaluation.commands import validate_main as main

__all__ = ["main"]

if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit
        status = 1
    sys.exit(status)
