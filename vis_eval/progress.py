"""Progress lines for long loops (dataset generation, video inference, evaluation): a log line at
the first step, then at most every ``every_s`` seconds, and at the last step."""

from __future__ import annotations

import logging
import time

__all__ = ["ProgressLogger"]


class ProgressLogger:
    """``step()`` once per item; logs ``"{what}: k/total {unit} (r {unit}/s)"`` at info level."""

    def __init__(
        self, logger: logging.Logger, what: str, total: int | None, unit: str = "items", every_s: float = 5.0
    ):
        self.logger, self.what, self.total, self.unit, self.every_s = logger, what, total, unit, every_s
        self.count = 0
        self.start = self.last = time.perf_counter()

    def step(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        done = self.total is not None and self.count >= self.total
        if self.count == n or done or now - self.last >= self.every_s:
            self.last = now
            of = f"/{self.total}" if self.total else ""
            rate = self.count / max(now - self.start, 1e-9)
            self.logger.info(f"{self.what}: {self.count}{of} {self.unit} ({rate:.1f} {self.unit}/s)")
