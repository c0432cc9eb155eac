"""``python -m vis_eval.validate RESULTS.json|results.zip GT.json|DATASET_NAME [--max-messages N]``.

Checks a results file before evaluation or upload (exit status 1 when it has errors); see
:mod:`vis_eval.evaluation.commands`.
"""

from .evaluation.commands import run_command
from .evaluation.commands import validate_main as main

__all__ = ["main"]

if __name__ == "__main__":
    run_command(main)
