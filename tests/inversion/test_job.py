import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdiode.cli import main
from fastdiode.inversion.inverter import DiodeInverter
from fastdiode.models import save
from tests.helpers import TINY, calibrated_teacher, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    save(calibrated_teacher(), path, class_names=["a", "b", "c", "d"])
    return path.with_suffix(".safetensors")


def job_args(teacher_path, out, *extra):
    return [f"teacher.weights={teacher_path}", "stages.iterations=[6,3]", "job.num_batches=3", f"job.out={out}",
            "job.progress=false", "fp.enabled=true", "fp.warmup=2", "fp.every=3", "fp.stop=8", *TINY[:-3],
            "targets.capacity=4", "teacher.num_classes=4", *extra]


def files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parent.name in ("images", "labels")}


def run_cli(args):
    assert main(["invert", *args]) == 0


def test_job_writes_a_ready_dataset(tmp_path, teacher_path):
    out = tmp_path / "out"
    run_cli(job_args(teacher_path, out, "stages.iterations=[4,2]"))
    assert len(list((out / "images").glob("*.png"))) == 12 and len(list((out / "labels").glob("*.txt"))) == 12
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 12 and [c["name"] for c in coco["categories"]] == ["a", "b", "c", "d"]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["batch"] for m in manifest] == [0, 1, 2] and all(m["status"] == "ok" for m in manifest)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 12 and summary["images_per_hour"] > 0 and summary["batches_failed"] == []
    assert (out / "preview.png").is_file() and not list(out.rglob("*.tmp"))


def test_same_command_gives_identical_pngs(tmp_path, teacher_path):
    run_cli(job_args(teacher_path, tmp_path / "a"))
    run_cli(job_args(teacher_path, tmp_path / "b"))
    assert files(tmp_path / "a") == files(tmp_path / "b")


def test_resume_after_interruption_gives_the_uninterrupted_dataset(tmp_path, teacher_path, monkeypatch):
    run_cli(job_args(teacher_path, tmp_path / "clean"))
    real_invert = DiodeInverter.invert
    calls = {"n": 0}

    def dying_invert(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed in the middle of batch 1
        return real_invert(self, *args, **kwargs)

    monkeypatch.setattr(DiodeInverter, "invert", dying_invert)
    with pytest.raises(KeyboardInterrupt):
        main(["invert", *job_args(teacher_path, tmp_path / "resumed")])
    assert len(list((tmp_path / "resumed" / "images").glob("*.png"))) == 4  # batch 0 only
    monkeypatch.setattr(DiodeInverter, "invert", real_invert)
    run_cli(job_args(teacher_path, tmp_path / "resumed"))
    assert files(tmp_path / "resumed") == files(tmp_path / "clean")
    manifest = (tmp_path / "resumed" / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["batch"] for line in manifest) == [0, 1, 2]  # no duplicates


def test_rerun_with_another_config_is_refused_but_a_longer_job_resumes(tmp_path, teacher_path, capsys):
    out = tmp_path / "out"
    run_cli(job_args(teacher_path, out, "job.num_batches=1"))
    assert main(["invert", *job_args(teacher_path, out, "job.num_batches=1", "loss.tv_l1=10")]) == 2
    assert "different config" in capsys.readouterr().err
    run_cli(job_args(teacher_path, out, "job.num_batches=2"))  # extending the same job is fine
    assert len(json.loads((out / "summary.json").read_text())["batches_failed"]) == 0
    assert json.loads((out / "summary.json").read_text())["batches_done"] == 2


def test_failed_batch_is_recorded_and_the_job_goes_on(tmp_path, teacher_path):
    out = tmp_path / "out"
    run_cli(job_args(teacher_path, out, "loss.l2=.inf", "job.log_every=2"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batches_failed"] == [0, 1, 2] and summary["images"] == 0


@pytest.mark.parametrize("override, message", [
    ("teacher.weights=\"\"", "teacher.weights: required"),
    ("teacher.weights=", "teacher.weights: expected str, got None"),
    ("teacher.weights=missing.safetensors", "missing.json: no such file"),
    ("stages.batch_size=[4]", "stages.batch_size: 1 values"),
    ("run.device=cuda", "CUDA was requested"),
])
def test_bad_input_fails_before_any_work(tmp_path, teacher_path, override, message, capsys):
    if override == "run.device=cuda" and __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["invert", *job_args(teacher_path, tmp_path / "out"), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "images").exists()


@pytest.mark.slow
def test_torchrun_two_processes_make_the_single_process_set(tmp_path, teacher_path):
    run_cli(job_args(teacher_path, tmp_path / "single"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                    "-m", "fastdiode", "invert", *job_args(teacher_path, tmp_path / "multi")],
                   check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert files(tmp_path / "multi") == files(tmp_path / "single")
    coco = json.loads((tmp_path / "multi" / "annotations.json").read_text())
    assert len(coco["images"]) == 12
    assert (tmp_path / "multi" / "manifest.rank1.jsonl").is_file()


def test_verifier_agreement_is_recorded(tmp_path, teacher_path):
    out = tmp_path / "out"
    run_cli(job_args(teacher_path, out, "stages.iterations=[3,2]", f"verifier={teacher_path}", "job.num_batches=1"))
    entry = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert set(entry["agreement"]) == {"teacher", "verifier"}
    assert set(entry["agreement"]["teacher"]) == {"precision", "recall", "ap50"}


@pytest.mark.slow
def test_compiled_teacher_gives_the_eager_losses(teacher_path, monkeypatch):
    """Dynamo traces the teacher with its BN-statistics hooks; aot_eager keeps the test free of inductor's
    C++ compile time while checking the same capture."""
    import functools

    import torch

    from fastdiode.inversion import one_box_targets
    from fastdiode.models import load
    from tests.helpers import tiny_config

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    results = []
    for mode in ("false", "true"):
        inverter = DiodeInverter(load(teacher_path), tiny_config("stages.iterations=[2,1]", f"run.compile={mode}",
                                                                 "job.log_every=1"))
        results.append(inverter.invert(one_box_targets(4, 4, 4, torch.Generator().manual_seed(0)), 0))
        inverter.close()
    eager, compiled = (r.history[0] for r in results)
    for key in ("total", "det", "bn"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-3), key


def test_progress_estimates_time_left_per_stage(monkeypatch):
    """Each stage's rate comes from its own steps, a stage not yet seen from a seen one scaled by its pixels per
    step: the estimate keeps falling across a change of stage instead of jumping to hours."""
    import fastdiode.inversion.job as job

    clock = [0.0]
    monkeypatch.setattr(job.time, "perf_counter", lambda: clock[0])

    class Bar:
        n = 0

        def set_postfix_str(self, text, refresh=True):
            self.text = text

        def update(self, k):
            self.n += k

    progress = job.StageProgress(Bar(), steps_left=[20, 10], work=[1.0, 4.0]).for_batch(0)
    estimates = []
    for stage, seconds, steps in ((0, 1.0, 20), (1, 4.0, 10)):
        for _ in range(steps):
            clock[0] += seconds
            progress(stage)
            estimates.append(progress.eta())
    assert estimates[1] == pytest.approx(18 * 1.0 + 10 * 4.0)  # stage 1 not seen yet: scaled from stage 0
    assert all(b <= a for a, b in zip(estimates[1:], estimates[2:]))
    assert estimates[-1] == 0
