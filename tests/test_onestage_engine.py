"""SkipNonFiniteTrainer: a non-finite loss skips the optimizer step instead of stopping training."""

import math

import torch
from detectron2.utils.events import EventStorage
from torch import nn

from onestage.engine import SkipNonFiniteTrainer


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, data):
        loss = (self.w * data).sum()
        return {"loss": loss}


def _trainer(values):
    model = _Model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return SkipNonFiniteTrainer(model, iter(values), optimizer), model


def test_finite_loss_steps():
    trainer, model = _trainer([torch.tensor([1.0, 2.0])])
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    assert torch.allclose(model.w.detach(), torch.tensor([0.9, 0.8]))
    assert trainer.skipped_steps == 0


def test_non_finite_loss_skips_the_step_and_counts_it():
    data = [torch.tensor([math.nan, 1.0]), torch.tensor([math.inf, 1.0]), torch.tensor([1.0, 1.0])]
    trainer, model = _trainer(data)
    with EventStorage(0) as storage:
        for i in range(2):
            trainer.iter = i
            trainer.run_step()
            assert torch.equal(model.w.detach(), torch.ones(2))  # unchanged: no step
        assert trainer.skipped_steps == 2
        assert storage.history("skipped_non_finite_steps").latest() == 2
        trainer.iter = 2
        trainer.run_step()  # training goes on
    assert torch.allclose(model.w.detach(), torch.tensor([0.9, 0.9]))
