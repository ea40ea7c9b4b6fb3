import json
from pathlib import Path

import pytest

from fastdiode.cli import main
from fastdiode.demo.config import SHIPPED_TEACHER

MINI = ["data={train: 48, val: 24, proxy: 24, size: 96, seed: 0}", "inversion.stages.iterations=[4,3,3]",
        "inversion.stages.batch_size=[8,8,8]", "inversion.fp={enabled: true, warmup: 2, every: 2, stop: 8}",
        "inversion.job.log_every=5", "distill.data.loader=torch", "distill.data.workers=0", "distill.train.steps=6",
        "distill.train.eval_every=3", "distill.train.batch_size=8", "distill.train.log_every=3",
        "rows=[{name: diode, source: diode, images: 8}, {name: real, source: real}, {name: noise, source: noise}]"]


@pytest.mark.parametrize("name, config", [("teacher_digits", "teacher_digits"),
                                          ("teacher_digits_v8", "teacher_digits_v8")])
def test_shipped_teachers_score_on_the_digits_val_set(tmp_path, name, config):
    """The packaged checkpoints load and score >= 0.90 mAP@0.5 on a fixed 120-image validation subset."""
    import torch

    from fastdiode.data.digits import DigitsSpec, build_digits
    from fastdiode.demo.run import evaluate_teacher
    from fastdiode.models import load, load_info

    path = SHIPPED_TEACHER.with_name(f"{name}.safetensors")
    paths = build_digits(tmp_path, DigitsSpec(train=0, val=120, proxy=0), progress=False)
    teacher = load(path)
    stats = evaluate_teacher(teacher, paths["val"], torch.device("cpu"))
    assert stats["mAP@.5"] >= 0.90
    info = load_info(path)
    assert info["metadata"]["command"].startswith(f"fastdiode train --config configs/{config}.yaml")
    assert path.stat().st_size <= 10 * 2**20


def test_paired_differences_and_their_interval():
    """Differences are paired by seed (seeds only one row ran are left out); the interval is the t-interval."""
    from fastdiode.demo.run import paired_differences

    base = {"seeds": [0, 1, 2, 3], "mAP@.5 runs": [0.5, 0.5, 0.5, 0.5], "mAP@[.5:.95] runs": [0.30, 0.32, 0.31, 0.9]}
    row = {"seeds": [0, 1, 2], "mAP@.5 runs": [0.6, 0.6, 0.6], "mAP@[.5:.95] runs": [0.31, 0.35, 0.33]}
    d = paired_differences(row, base)["mAP@[.5:.95]"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.02)
    half = 4.302653 * 0.01 / 3 ** 0.5  # t(0.975, 2) x std of (0.01, 0.03, 0.02) / sqrt(3)
    assert d["ci95"] == pytest.approx([0.02 - half, 0.02 + half], rel=1e-5)
    assert "TIDE Cls" not in paired_differences(row, base)  # no TIDE stored per seed: no TIDE differences


def test_paired_tide_differences_and_their_table():
    from fastdiode.demo.run import format_paired_table, paired_differences

    def tide(cls):
        return {"main": {"Cls": cls, "Loc": 1.0, "Dupe": 0.5}, "special": {"FalsePos": 2 * cls}}

    base = {"row": "base", "seeds": [0, 1], "mAP@.5 runs": [0.5, 0.6], "mAP@[.5:.95] runs": [0.3, 0.3],
            "tide runs": [tide(10.0), tide(12.0)]}
    row = {"row": "kd", "baseline": "base", "seeds": [1, 0], "mAP@.5 runs": [0.7, 0.5],
           "mAP@[.5:.95] runs": [0.31, 0.32], "tide runs": [tide(9.0), tide(8.0)]}
    row["vs baseline"] = d = paired_differences(row, base)
    assert d["TIDE Cls"]["mean"] == pytest.approx(-2.5) and d["TIDE FalsePos"]["mean"] == pytest.approx(-5.0)
    assert d["TIDE Loc"]["ci95"] == pytest.approx([0.0, 0.0])
    lines = format_paired_table([base, row]).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| kd (2) | base | +5.0 [")
    assert "| -2.50 [" in lines[2]


@pytest.mark.skipif(not SHIPPED_TEACHER.is_file(), reason="the shipped teacher is not built yet")
def test_mini_demo_runs_end_to_end_and_reuses_its_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", f"out={out}", *MINI]) == 0
    table = capsys.readouterr().out
    assert "| diode (diode, 1) |" in table and "| noise (noise, 1) |" in table
    results = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in results["rows"]] == ["diode", "real", "noise"]
    for name in ("report.md", "curves.png", "teacher_on_synth.png", "synth/diode/preview.png"):
        assert (out / name).is_file(), name
    import fastdiode.demo.run as demo
    import fastdiode.inversion.job as job

    def refuse(*args, **kwargs):
        raise AssertionError("the second run synthesized or trained again")

    monkeypatch.setattr(demo, "run_training", refuse)  # everything is reused: neither engine may run again
    monkeypatch.setattr(job, "run_job", refuse)
    assert main(["demo", f"out={out}", *MINI]) == 0
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    # --rows reports the named rows alone, reusing their runs, and says that the others are left out
    assert main(["demo", "--rows", "noise", f"out={out}", *MINI]) == 0
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"][2:]
    assert "Rows run: 1 of the config's 3 (`--rows`)" in (out / "report.md").read_text()


def test_demo_config_errors(tmp_path, capsys):
    assert main(["demo", f"out={tmp_path}", "rows=[{name: a, source: imagenet}]"]) == 2
    assert "rows[0].source" in capsys.readouterr().err
    # a synthesized image may carry inversion.targets.capacity boxes: a smaller loader is refused before any work
    assert main(["demo", f"out={tmp_path}", "distill.data.capacity=4"]) == 2
    err = capsys.readouterr().err
    assert "rows[0]: distill.data.capacity 4 is below inversion.targets.capacity 16" in err
    assert not any(tmp_path.iterdir())
    assert main(["demo", "--rows", "diode,imagenet", f"out={tmp_path}"]) == 2
    assert "--rows: imagenet is not a row of this config (rows: diode, real, photos, noise)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_selected_rows_bring_their_baselines_in_config_order():
    from fastdiode.config import load_config
    from fastdiode.demo.config import DemoConfig

    cfg = load_config(DemoConfig, Path(__file__).resolve().parents[2] / "configs" / "bench_kd.yaml", [])
    assert [r.name for r in cfg.selected_rows(["review", "kd"])] == ["baseline", "kd", "review"]
    assert [r.name for r in cfg.selected_rows(None)] == [r.name for r in cfg.rows]


def test_diagnosis_counts_y_fp_boxes_after_the_sampled_one(tmp_path):
    """benchmarks/diagnose_digits.py reads a label file's first row as the sampled box and the rest as Y_fp's."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.diagnose_digits import box_stats, read_boxes

    (tmp_path / "synth" / "labels").mkdir(parents=True)
    (tmp_path / "synth" / "labels" / "a.txt").write_text("3 0.5 0.5 0.4 0.4\n5 0.2 0.2 0.2 0.2\n7 0.8 0.8 0.6 0.6\n")
    (tmp_path / "synth" / "labels" / "b.txt").write_text("1 0.5 0.5 0.3 0.3\n")
    s = box_stats(read_boxes(tmp_path / "synth", 8), synthesized=True)
    assert s["per_image"] == 2.0 and s["max"] == 3 and s["with_fp"] == 0.5
    assert s["fp_per_image"] == 1.0 and s["fp_share"] == 0.5 and s["fp_side"] == pytest.approx(0.4)
    (tmp_path / "real" / "labels").mkdir(parents=True)
    (tmp_path / "real" / "labels" / "a.txt").write_text("2 0.2 0.4 0.2 0.4\n")
    (real,) = read_boxes(tmp_path / "real", 8)
    assert real[0].tolist() == pytest.approx([2, 0.2, 0.4, 0.2, 0.4])


def test_report_names_the_objective_holdout_and_load_from_the_config():
    """The report's first paragraph says what the config trains (not always mimic learning), mentions a holdout
    only when there is one, and flags a busy machine only when the load at the start reached the core count."""
    from fastdiode.config import load_config
    from fastdiode.demo.config import DemoConfig
    from fastdiode.demo.run import format_demo_report

    configs = Path(__file__).resolve().parents[2] / "configs"
    teacher = {"mAP@.5": 0.9, "mAP@[.5:.95]": 0.6}
    row = {"row": "baseline", "source": "diode", "seeds": [0], "mAP@.5": 0.8, "mAP@[.5:.95]": 0.5, "images": 256,
           "minutes": 1.0, "tide": None}

    def report(path, overrides, start_load):
        cfg = load_config(DemoConfig, configs / path, overrides)
        machine = {"start": {"cores": 2, "load_1min": start_load}, "end": {"cores": 2, "load_1min": 2.5}}
        return format_demo_report(cfg, teacher, [row], 1.0, None, machine).split("\n\n")[1]

    kd = report("bench_kd.yaml", ["data.holdout=0"], 1.0)
    assert "(1 × the detector loss on labels unless a row says otherwise)" in kd
    assert "mimic learning" not in kd and "holdout" not in kd and "other work shared" not in kd
    digits = report("bench_digits.yaml", ["data.holdout=64"], 2.0)
    assert "(1 × mimic learning unless a row says otherwise)" in digits
    assert "(the 64 images held out from the train set" in digits
    assert "(at or above the core count at the start: other work shared the cores)" in digits
