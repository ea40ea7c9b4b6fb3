import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiode.cli import main
from fastdiode.config import ConfigError, load_config
from fastdiode.distill import TrainConfig, run_training
from fastdiode.loading import build_student
from fastdiode.models import build_model, load, load_darknet_weights, save_darknet_weights
from fastdiode.runtime import RunContext
from tests.helpers import free_port, train_args

ROOT = Path(__file__).resolve().parents[2]


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def train(out, data, *extra, teacher=None, resume=False, stop_at=None, classifier=None):
    args = train_args(out, data, *extra) + ([f"teacher={teacher}"] if teacher else []) + \
        ([f"classifier={classifier}"] if classifier else [])
    cfg = load_config(TrainConfig, None, args)
    t = load(teacher) if teacher else None
    student = build_student(cfg, t)
    return run_training(cfg, student, t, RunContext(torch.device("cpu")), [str(i) for i in range(10)], resume=resume,
                        progress=False, stop_at=stop_at)


def test_mimic_loss_falls_on_a_handful_of_images(tmp_path, digits, teacher_path):
    train(tmp_path / "run", digits["train"], "train.steps=50", "train.log_every=10", "optim.lr=0.01",
          "optim.warmup=0.0", "data.flip_p=0", "data.hue=0", "data.saturation=0", "data.value=0",
          teacher=teacher_path)
    losses = [e["mimic"] for e in metrics(tmp_path / "run") if "mimic" in e]
    assert all(e["label"] == 0 for e in metrics(tmp_path / "run") if "label" in e)  # DIODE: no label loss
    assert losses[-1] < 0.5 * losses[0]


def test_train_lowers_the_label_loss_and_writes_its_outputs(tmp_path, digits):
    out = tmp_path / "run"
    summary = train(out, digits["train"], "train.steps=30", "train.log_every=5", "optim.lr=0.005",
                    f"data.val={digits['val']}", "train.eval_every=15")
    losses = [e["label"] for e in metrics(out) if "label" in e]
    assert losses[-1] < losses[0]
    evals = [e for e in metrics(out) if "eval" in e]
    assert [e["step"] for e in evals] == [15, 30]
    assert summary["final_eval"] == evals[-1]["eval"]
    for name in ("last.safetensors", "last.json", "best.safetensors", "state.pt", "summary.json", "curves.png",
                 "config.json"):
        assert (out / name).is_file(), name
    assert load(out / "last").num_classes == 10


TERMS = ("loss.distill=0", "loss.label=1", "loss.kd.weight=1", "loss.fitnet.weight=1", "loss.fgfi.weight=0.01",
         "loss.review.weight=1", "loss.review.warmup=4")


DICOD = ("loss.distill=0", "loss.label=1", "loss.dicod_cls.weight=0.4", "loss.dicod_loc.weight=0.15")


@pytest.mark.parametrize("ema, terms", [(False, ()), (True, ()), (False, TERMS), (False, DICOD)])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, digits, teacher_path, classifier_path, ema, terms):
    extra = ("train.steps=8", "train.checkpoint_every=4", f"optim.ema={str(ema).lower()}", *terms)
    clf = classifier_path if terms is DICOD else None
    train(tmp_path / "full", digits["train"], *extra, teacher=teacher_path, classifier=clf)
    train(tmp_path / "cut", digits["train"], *extra, teacher=teacher_path, stop_at=4, classifier=clf)
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:  # a line written after the checkpoint, then killed
        f.write(json.dumps({"step": 5, "loss": 1.0, "mimic": 1.0, "label": 0.0}) + "\n")
    train(tmp_path / "cut", digits["train"], *extra, teacher=teacher_path, resume=True, classifier=clf)
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [e["step"] for e in cut] == [e["step"] for e in full]
    for a, b in zip(full, cut):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    a, b = load(tmp_path / "full" / "last"), load(tmp_path / "cut" / "last")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_distillation_terms_log_train_and_stay_out_of_the_checkpoint(tmp_path, digits, teacher_path):
    import safetensors.torch

    train(tmp_path / "run", digits["train"], "train.steps=4", *TERMS, teacher=teacher_path)
    logged = metrics(tmp_path / "run")
    for name in ("kd", "fitnet", "fgfi", "review"):
        assert all(e[name] > 0 for e in logged), name
    assert logged[0]["review"] > 0 and logged[0]["loss"] == pytest.approx(logged[0]["label"] + logged[0]["kd"] +
                                                                         logged[0]["fitnet"] + 0.01 * logged[0]["fgfi"],
                                                                         rel=1e-4)  # review ramps from 0 at step 0
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert any(k.startswith("terms.review.loss.abfs") for k in state["task"]["adapters"])
    exported = safetensors.torch.load_file(tmp_path / "run" / "last.safetensors")
    assert set(exported) == set(state["task"]["student"])  # the student alone: no adapter in the checkpoint


@pytest.mark.parametrize("override, match", [
    (["loss.review.weight=1", "loss.review.points=fpn"], "loss.review: the student: feature point 'fpn'"),
    (["loss.fitnet.weight=1", "loss.fitnet.points=backbone[5]"], "loss.fitnet: the student"),
    (["loss.fgfi.weight=1", "loss.fgfi.points=backbone"], "loss.fgfi: point 0"),
])
def test_term_errors_come_before_any_step(tmp_path, digits, teacher_path, override, match):
    with pytest.raises(ValueError, match=match):
        train(tmp_path / "run", digits["train"], *override, teacher=teacher_path)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_kd_with_head_layouts_that_differ_is_a_clear_error(tmp_path, digits, teacher_path):
    cfg = load_config(TrainConfig, None, train_args(tmp_path / "run", digits["train"], f"teacher={teacher_path}",
                                                    "loss.distill=0", "loss.label=1", "loss.kd.weight=1"))
    student = build_model("yolov3-tiny", num_classes=10, input_size=64)  # heads at strides 32, 16; the teacher's 16, 8
    with pytest.raises(ValueError, match="loss.kd: the student's and the teacher's head maps do not match"):
        run_training(cfg, student, load(teacher_path), RunContext(torch.device("cpu")), progress=False)


def test_existing_run_is_not_overwritten_and_resume_needs_a_state(tmp_path, digits):
    train(tmp_path / "run", digits["train"], "train.steps=2")
    with pytest.raises(ValueError, match="already holds a run"):
        train(tmp_path / "run", digits["train"], "train.steps=2")
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tmp_path / "other", digits["train"], resume=True)


def test_teacher_gets_no_gradients(tmp_path, digits, teacher_path):
    from fastdiode.distill import Trainer

    cfg = load_config(TrainConfig, None, train_args(tmp_path, digits["train"], f"teacher={teacher_path}"))
    teacher = load(teacher_path)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = Trainer(cfg, build_student(cfg, teacher), teacher, RunContext(torch.device("cpu")), [], progress=False)
    trainer.train_step(torch.rand(2, 3, 64, 64), torch.full((2, 4, 5), -1.0))
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def test_mismatched_heads_are_a_clear_error(tmp_path, digits, teacher_path):
    with pytest.raises(ValueError, match="identical head layouts"):
        train(tmp_path / "run", digits["train"], "student.model=yolov3-tiny", "student.width=null",
              teacher=teacher_path)


@pytest.mark.parametrize("override, match", [
    (['data.train=""'], "data.train: required"),
    (["optim.name=rmsprop"], "optim.name"),
    (["train.img_size=100"], "multiple of 32"),
    (["loss.distill=1"], "needs a teacher"),
    (["loss.review.weight=1"], "loss.review.weight: 1.0 > 0 needs a teacher"),
    (["loss.kd.temperature=0", "teacher=t.safetensors"], "loss.kd.temperature"),
    (["train.bogus=1"], "unknown config key train.bogus"),
])
def test_config_errors(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, None, train_args(tmp_path, "x") + override)


def test_cli_errors_name_the_problem(tmp_path, capsys, digits, teacher_path):
    assert main(["train", f"data.train={tmp_path / 'missing'}"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["distill", f"data.train={digits['train']}"]) == 2
    assert "needs a teacher" in capsys.readouterr().err
    assert main(["train", f"data.train={digits['train']}", f"teacher={teacher_path}"]) == 2
    assert "use fastdiode distill" in capsys.readouterr().err


@pytest.mark.parametrize("terms", [(), ("loss.review.weight=1", "loss.fitnet.weight=1")])
def test_ddp_two_processes_match_one_process(tmp_path, digits, teacher_path, terms):
    """Same global batch (4): rank r takes half of it; synchronised BN (the adapters' too) and gradient averaging
    make step 1 identical. SGD, because Adam's first step is sign(gradient), which float noise flips near 0.
    (Terms that are means over the batch: the YOLO loss and KD normalise by per-rank counts, as in any DDP.)"""
    args = train_args(tmp_path / "x", digits["train"], "train.steps=1", "optim.name=sgd", "optim.momentum=0",
                      "optim.lr=0.01", "optim.warmup=0",
                      f"teacher={teacher_path}", *terms)
    args = [a for a in args if not a.startswith("train.out")]
    subprocess.run([sys.executable, "-m", "fastdiode", "distill", *args, f"train.out={tmp_path / 'one'}"],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                    "-m", "fastdiode", "distill", *args, f"train.out={tmp_path / 'two'}"],
                   check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)
    one, two = metrics(tmp_path / "one")[0], metrics(tmp_path / "two")[0]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    a, b = load(tmp_path / "one" / "last"), load(tmp_path / "two" / "last")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def test_distill_takes_a_darknet_weights_teacher(tmp_path, digits):
    """teacher=X.weights with its built-in architecture: the same teacher section as fastdiode invert."""
    torch.manual_seed(3)
    weights = save_darknet_weights(build_model("yolo-micro", num_classes=10, width=0.25), tmp_path / "t.weights")
    assert main(["distill", *train_args(tmp_path / "run", digits["train"]), f"teacher={weights}",
                 "teacher.model=yolo-micro", "teacher.width=0.25", "teacher.num_classes=10"]) == 0
    logged = metrics(tmp_path / "run")
    assert logged[0]["mimic"] > 0 and logged[-1]["step"] == 6


def test_validation_does_not_change_the_config(tmp_path):
    """validate() only checks: the config (and its hash) is the same validated or not; defaults resolve on use."""
    from fastdiode.config import config_hash, from_dict

    raw = {"data": {"train": "x"}, "teacher": "t.safetensors"}
    checked = load_config(TrainConfig, None, ["data.train=x", "teacher=t.safetensors"])
    assert config_hash(checked) == config_hash(from_dict(TrainConfig, raw))
    assert checked.loss.distill is None and checked.loss_weights() == (1.0, 0.0)


def test_dicod_terms_train_without_a_teacher_and_stay_out_of_the_checkpoint(tmp_path, digits, classifier_path):
    import safetensors.torch

    out = tmp_path / "run"
    train(out, digits["train"], "train.steps=3", *DICOD[2:], classifier=classifier_path)
    logged = [e for e in metrics(out) if "loss" in e]
    for entry in logged:
        assert entry["dicod_cls"] > 0 and entry["dicod_loc"] > 0
        assert entry["loss"] == pytest.approx(entry["label"] + 0.4 * entry["dicod_cls"] + 0.15 * entry["dicod_loc"],
                                              rel=1e-4)
    assert set(safetensors.torch.load_file(str(out / "last.safetensors"))) == set(load(out / "last").state_dict())
    state = torch.load(out / "state.pt", weights_only=False)
    assert not state["task"]["adapters"]  # the frozen classifier is neither trained nor saved


def test_dicod_bad_input_is_one_clear_error(tmp_path, digits, classifier_path, teacher_path):
    from fastdiode.models import save
    from fastdiode.models.resnet import ResNet

    with pytest.raises(ConfigError, match="loss.dicod_cls.weight.*classifier=PATH"):
        train(tmp_path / "a", digits["train"], "loss.dicod_cls.weight=0.4")
    five = save(ResNet(5, width=4, depths=(1,), input_size=16), tmp_path / "five")
    with pytest.raises(ValueError, match="classifier: 5 classes, but the detector has 10"):
        train(tmp_path / "b", digits["train"], "loss.dicod_loc.weight=0.1", classifier=five)
    with pytest.raises(ValueError, match="an FP detector, but a classifier is expected"):
        train(tmp_path / "c", digits["train"], "loss.dicod_cls.weight=0.4", classifier=teacher_path)
    with pytest.raises(ValueError, match="a classifier, but an FP detector is expected"):
        train(tmp_path / "d", digits["train"], teacher=classifier_path)
    with pytest.raises(ConfigError, match="loss.dicod_loc.size"):
        train(tmp_path / "e", digits["train"], "loss.dicod_loc.weight=0.1", "loss.dicod_loc.size=0",
              classifier=classifier_path)
    assert not (tmp_path / "b" / "state.pt").exists()


def test_fitnet_point_is_read_as_points_with_a_deprecation_warning(tmp_path):
    with pytest.warns(FutureWarning, match="loss.fitnet.point is deprecated: it is read as loss.fitnet.points"):
        cfg = load_config(TrainConfig, None, train_args(tmp_path, "x") + ["loss.fitnet.point=backbone[1]"])
    assert cfg.loss.fitnet.points == "backbone[1]"
    with pytest.raises(ConfigError, match="loss.fitnet.point: renamed loss.fitnet.points, which is also set"):
        load_config(TrainConfig, None, train_args(tmp_path, "x") + ["loss.fitnet.point=a", "loss.fitnet.points=b"])


def test_every_term_of_the_table_has_its_config_section():
    """One table drives the config: each term's section exists with the term's own config class."""
    from fastdiode.distill import TERMS
    from fastdiode.distill.config import DistillLossConfig

    loss = DistillLossConfig()
    assert [f for f in vars(loss) if f not in ("distill", "label")] == list(TERMS)
    for name, term in TERMS.items():
        assert type(getattr(loss, name)) is term.Config and term.name == name
    assert loss.terms() == {}


def test_dataset_with_other_classes_is_an_error_before_any_step(tmp_path, digits):
    """An 80-class teacher on a 10-class dataset: one error naming the dataset's file and both counts."""
    torch.manual_seed(3)
    weights = save_darknet_weights(build_model("yolo-micro", num_classes=80, width=0.25), tmp_path / "t.weights")
    cfg = load_config(TrainConfig, None, train_args(tmp_path / "run", digits["train"]) + [
        f"teacher={weights}", "teacher.model=yolo-micro", "teacher.width=0.25"])
    teacher = load_darknet_weights(build_model("yolo-micro", num_classes=80, width=0.25), weights)
    with pytest.raises(ValueError, match=r"data.train: .*annotations.json names 10 classes, but the model has 80"):
        run_training(cfg, build_student(cfg, teacher), teacher, RunContext(torch.device("cpu")), progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
