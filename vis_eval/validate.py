"""Check a YouTube-VIS results file before evaluation or upload.

    python -m vis_eval.validate RESULTS.json|results.zip GT.json|DATASET_NAME [--max-messages N]

Exits with status 1 when the file has errors.
"""

from __future__ import annotations

import argparse
import sys

from .results import validate_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a YouTube-VIS results file")
    parser.add_argument("results", help="results JSON or submission zip")
    parser.add_argument(
        "gt", help="annotation JSON of the split (valid/test JSONs work) or a registered dataset"
    )
    parser.add_argument("--max-messages", type=int, default=20)
    parser.add_argument("--no-decode", action="store_true", help="skip decoding every RLE string")
    args = parser.parse_args(argv)
    report = validate_results(
        args.results, args.gt, max_messages=args.max_messages, check_counts=not args.no_decode
    )
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
