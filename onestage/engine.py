"""Training-loop pieces shared by the entry points."""

from __future__ import annotations

import logging
import time

import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

__all__ = ["SkipNonFiniteTrainer"]

logger = logging.getLogger(__name__)


class SkipNonFiniteTrainer(SimpleTrainer):
    """``SimpleTrainer`` that skips the optimizer step when the total loss is not finite on any
    process (STMask's authors do so; ``SOLVER.SKIP_NON_FINITE_STEPS``), with a warning and the
    running count in the ``skipped_non_finite_steps`` scalar, instead of stopping training with
    Detectron2's ``FloatingPointError``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0

    def run_step(self) -> None:
        if not self.model.training:
            raise RuntimeError("SkipNonFiniteTrainer: the model was switched to eval mode")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()  # as the authors: backward always (keeps DDP's reducer in step)
        finite = torch.isfinite(losses.detach()).to(torch.float32).reshape(1)
        if comm.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if bool(finite.item()):
            self.after_backward()
            self._write_metrics(loss_dict, data_time)
            self.optimizer.step()
            return
        self.skipped_steps += 1
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        logger.warning(f"iteration {self.iter}: non-finite loss {values}; optimizer step skipped")
        get_event_storage().put_scalar("skipped_non_finite_steps", self.skipped_steps)
