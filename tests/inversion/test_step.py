"""The static-buffer stage step: what a captured CUDA graph replays, checked here by running it eagerly."""
import pytest
import torch

from fastdiode.augment import DiodeAugment
from fastdiode.inversion import DiodeInverter
from fastdiode.inversion.config import StageSpec
from fastdiode.inversion.step import StageStep
from fastdiode.runtime.schedule import lr_at
from tests.helpers import targets, tiny_config


def test_reused_buffers_reproduce_a_fresh_run(teacher):
    """One inverter's step buffers serve every chunk and batch: after other batches, a seed gives exactly
    what a fresh inverter gives (images, targets, logged losses)."""
    cfg = tiny_config("stages.iterations=[6,4]", "job.log_every=2")
    fresh = DiodeInverter(teacher, cfg)
    expected = fresh.invert(targets(), seed=7)
    fresh.close()
    reused = DiodeInverter(teacher, cfg)
    reused.invert(targets(seed=2), seed=1)
    again = reused.invert(targets(), seed=7)
    reused.close()
    assert reused.step_shapes == [(0, 4, 4), (1, 3, 4), (1, 1, 4)]  # stage 1 re-batches 4 images as 3 + 1
    assert torch.equal(again.images, expected.images) and torch.equal(again.targets, expected.targets)
    assert again.history == expected.history


class SquareObjective:
    """A stage objective of the step's interface: no augmentation, the loss sum((x - 0.5)^2)."""

    names = ("total", "zero")

    def begin(self):
        pass

    def draw(self, batch, height, width, generator, steps):
        return DiodeAugment(jitter=0).sample_params(batch, height, width, generator, steps=steps)

    def __call__(self, x, targets, draw, step):
        return (x - 0.5).square().sum(), torch.zeros(2)


def test_step_follows_the_lr_schedule_on_the_device():
    """With Adam's betas (0, 0) every pixel moves by the step's lr (sign descent); the lr of step t is read
    from the device table by the device step counter, and a reload restarts the schedule."""
    lr = (0.01, 0.001, 0.25)
    spec = StageSpec(resolution=8, batch_size=2, iterations=8, lr=lr[0], lr_min=lr[1], warmup=lr[2], betas=(0.0, 0.0))
    step = StageStep(SquareObjective(), spec, batch=2, capacity=1, device=torch.device("cpu"))
    u = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    start = 0.5 + torch.where(u > 0.5, 1.0, -1.0) * (0.05 + 0.05 * u)  # |x - 0.5| > lr sums: no sign flips
    for _ in range(2):
        step.load(start, torch.zeros(2, 1, 5), torch.Generator().manual_seed(0))
        for t in range(8):
            before = step.x.detach().clone()
            step.run()
            moved = (before - step.x.detach()).abs()
            torch.testing.assert_close(moved, torch.full_like(moved, lr_at(t, 8, *lr)), atol=1e-6, rtol=1e-4)
        assert int(step.step) == 8


def test_cuda_graph_on_cpu_is_a_clear_error(teacher):
    with pytest.raises(ValueError, match="job.cuda_graph"):
        DiodeInverter(teacher, tiny_config("job.cuda_graph=true"))
