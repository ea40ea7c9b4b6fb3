"""YOLOv8/11 teachers and students through the trainer: mimic on the raw maps across scales, the v8 label loss,
every distillation term (KD weighted by the teacher's class confidence, FGFI on the assigner's positive cells,
DICOD on the v8 assignment), evaluation with TIDE, and the one clear error for mixed head layouts."""
import json

import pytest
import torch

from fastdiode.config import load_config
from fastdiode.distill import TrainConfig, run_training
from fastdiode.loading import build_student
from fastdiode.models import build_model, load, save
from fastdiode.runtime import RunContext
from tests.helpers import train_args

TERMS = ("loss.kd.weight=1", "loss.fitnet.weight=1", "loss.fgfi.weight=0.01", "loss.review.weight=1")


@pytest.fixture(scope="module")
def v8_teacher(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model("yolov8-micro", num_classes=10, input_size=64).eval()
    return save(model, tmp_path_factory.mktemp("v8") / "teacher", [str(i) for i in range(10)])


def run(tmp_path, data, *extra, teacher=None, classifier=None, val=None):
    args = train_args(tmp_path, data, "student.model=yolo11-micro", "student.width=null", *extra) + \
        ([f"teacher={teacher}"] if teacher else []) + ([f"classifier={classifier}"] if classifier else []) + \
        ([f"data.val={val}", "train.eval_every=6"] if val else [])
    cfg = load_config(TrainConfig, None, args)
    t = load(teacher) if teacher else None
    summary = run_training(cfg, build_student(cfg, t), t, RunContext(torch.device("cpu")),
                           [str(i) for i in range(10)], progress=False)
    return summary, [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_v8_teacher_distils_a_yolo11_student_with_every_term(tmp_path, digits, v8_teacher):
    summary, logged = run(tmp_path / "run", digits["train"], "loss.label=1", *TERMS, teacher=v8_teacher,
                          val=digits["val"])
    train = [e for e in logged if "loss" in e]
    for name in ("mimic", "label", "kd", "fitnet", "fgfi", "review"):
        assert all(e[name] > 0 for e in train), name
    assert summary["final_eval"]["tide"] is not None  # evaluation and TIDE on the anchor-free student
    assert load(tmp_path / "run" / "last").name == "yolo11-micro"


@pytest.mark.slow
def test_dicod_terms_use_the_v8_assignment(tmp_path, digits, classifier_path):
    _, logged = run(tmp_path / "run", digits["train"], "loss.dicod_cls.weight=0.4", "loss.dicod_loc.weight=0.15",
                    classifier=classifier_path)
    assert all(e["dicod_cls"] > 0 and e["dicod_loc"] > 0 for e in logged if "loss" in e)


def test_yolov3_teacher_with_a_v8_student_is_one_clear_error(tmp_path, digits, teacher_path):
    with pytest.raises(ValueError, match="mimic learning needs identical head layouts: choose a student of the "
                                         "teacher's family"):
        run(tmp_path / "run", digits["train"], teacher=teacher_path)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="loss.kd: .*one is anchor-free"):
        run(tmp_path / "kd", digits["train"], "loss.distill=0", "loss.label=1", "loss.kd.weight=1",
            teacher=teacher_path)
