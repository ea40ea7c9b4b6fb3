"""The shared step loop on a task small enough to follow by hand: cadence, NaN check, Ctrl-C and resume."""
import json

import pytest
import torch
from torch import nn

from fastdiode.config import ConfigError
from fastdiode.runtime import RunContext
from fastdiode.runtime.run_dir import STATE
from fastdiode.training import LoopConfig, OptimConfig, StepLoop


class LineFit:
    """Fits y = 2x + 1 with one linear layer; batch s is a pure function of s. Optionally poisons or interrupts."""

    title, loss_names, metrics, best_metric, num_items = "line", ["mse"], ("fit",), "fit", 32

    def __init__(self, nan_at=None, interrupt_at=None):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.nan_at, self.interrupt_at, self.exported = nan_at, interrupt_at, []

    def parameters(self):
        return self.model.parameters()

    def batches(self, start, stop):
        for step in range(start, stop):
            x = torch.rand(8, 1, generator=torch.Generator().manual_seed(step))
            yield x, 2 * x + 1

    def loss(self, batch, step):
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        x, y = batch
        mse = (self.model(x) - y).square().mean() * (float("nan") if step == self.nan_at else 1.0)
        return mse, mse.detach()[None]

    def after_step(self):
        pass

    def evaluate(self, final):
        with torch.no_grad():
            return {"fit": -abs(self.model.weight.item() - 2), "final": final}

    def state_dict(self):
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])

    def export(self, path, **metadata):
        self.exported.append((path.name, metadata["step"]))

    def close(self):
        pass


def make_loop(out, task, **loop):
    cfg = LoopConfig(**{"steps": 12, "batch_size": 8, "eval_every": 5, "log_every": 4, "checkpoint_every": 6,
                        "out": str(out), **loop})
    out.mkdir(exist_ok=True)
    optim = OptimConfig(name="sgd", lr=0.1, momentum=0.0, warmup=0.0)
    return StepLoop(task, cfg, optim, RunContext(torch.device("cpu")), "hash", progress=False)


def lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cadence_summary_and_checkpoints(tmp_path):
    task = LineFit()
    summary = make_loop(tmp_path, task).run()
    logged = lines(tmp_path)
    assert [e["step"] for e in logged if "loss" in e] == [4, 8, 12]  # every log_every, and the last
    assert [(e["step"], e["eval"]["final"]) for e in logged if "eval" in e] == [(5, False), (10, False), (12, True)]
    assert logged[-2]["loss"] < logged[0]["loss"] and logged[0]["epoch"] == 1.0
    assert ("last", 6) in task.exported and ("last", 12) in task.exported and task.exported[0] == ("best", 5)
    assert summary["steps"] == 12 and summary["best_metric"] == "fit" and summary["run"]["device"] == "cpu"
    assert json.loads((tmp_path / "summary.json").read_text())["final_eval"] == summary["final_eval"]
    assert (tmp_path / "curves.png").is_file()


def test_a_non_finite_loss_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="step 4: non-finite loss.*lower optim.lr"):
        make_loop(tmp_path, LineFit(nan_at=2)).run()


def test_ctrl_c_saves_the_state_and_resume_replays_the_run(tmp_path):
    full = make_loop(tmp_path / "full", LineFit())
    full.run()
    cut = make_loop(tmp_path / "cut", LineFit(interrupt_at=9))
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    assert torch.load(tmp_path / "cut" / STATE, weights_only=False)["step"] == 9  # saved where it stopped
    resumed = make_loop(tmp_path / "cut", LineFit())
    resumed.load_state()
    resumed.run()
    strip = lambda out: [{k: v for k, v in e.items() if k != "images_per_s"} for e in lines(out)]  # noqa: E731
    assert strip(tmp_path / "cut") == strip(tmp_path / "full")
    assert torch.equal(resumed.task.model.weight, full.task.model.weight)


def test_resume_with_another_config_is_refused(tmp_path):
    make_loop(tmp_path, LineFit()).run(stop_at=6)
    other = make_loop(tmp_path, LineFit())
    other.config_hash = "other"
    with pytest.raises(ValueError, match="different config"):
        other.load_state()


@pytest.mark.parametrize("key, value, match", [("lr", -1.0, "optim.lr: expected > 0, got -1.0"),
                                               ("name", "rmsprop", "optim.name"),
                                               ("betas", [0.9], "optim.betas"),
                                               ("warmup", 2.0, "optim.warmup")])
def test_optimiser_settings_are_checked_by_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        OptimConfig(**{key: value}).validate()


def test_weight_decay_spares_bn_and_biases():
    from fastdiode.training import build_optimizer

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model.parameters(), OptimConfig(weight_decay=0.1), torch.device("cpu"))
    decayed, plain = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [(4, 3, 3, 3)] and decayed["weight_decay"] == 0.1
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
