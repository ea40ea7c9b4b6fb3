"""Every shipped config runs end to end at a tiny size: a config that cannot run is a defect. Only sizes, step
counts and paths are overridden (and the distillation student of the COCO config, whose 62M-parameter YOLOv3
student and teacher would not fit a test); every other key is the file's own."""
from pathlib import Path

import pytest
import yaml

from fastdiode.cli import main
from fastdiode.data.digits import DigitsSpec, build_digits
from fastdiode.models import build_model, save

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "fastdiode" / "assets" / "demo_digits.yaml"]
KINDS = {"diode_yolov3_coco": "invert", "diode_reference_code": "invert", "distill_yolov3_coco": "distill",
         "teacher_digits": "train", "teacher_digits_v8": "train", "bench_digits": "demo",
         "bench_digits_v8": "demo", "demo_digits": "demo", "bench_kd": "demo",
         "bench_dicod": "demo", "classifier_digits": "train-classifier", "quantize_ptq": "quantize",
         "quantize_qat": "quantize", "bench_quant": "bench-quant"}


def test_every_shipped_config_is_covered():
    assert sorted(p.stem for p in CONFIGS) == sorted(KINDS)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    spec = DigitsSpec(train=12, val=6, proxy=6, size=64, min_digit=16, max_digit=32, max_digits=2)
    return build_digits(tmp_path_factory.mktemp("digits"), spec, progress=False)


def tiny_stages(path: Path) -> list[str]:
    """Per-stage lists of the config's own length, at 32-64 px, batch 2, a few iterations; Y_fp early."""
    n = len(yaml.safe_load(path.read_text())["stages"]["resolution"])
    res = [32] * (n - 1) + [64]
    return [f"stages.resolution={res}", f"stages.batch_size={[2] * n}", f"stages.iterations={[6] + [2] * (n - 1)}",
            f"augment.jitter={[4] * n}", "fp.warmup=2", "fp.every=2", "fp.stop=4", "fp.conf=0.0",
            "job.progress=false", "job.num_batches=1"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k, v in KINDS.items() if v == "invert"])
def test_inversion_config_runs(name, tmp_path):
    path = ROOT / "configs" / f"{name}.yaml"
    assert main(["invert", "--config", str(path), "teacher.weights=random", f"job.out={tmp_path}",
                 *tiny_stages(path)]) == 0
    assert len(list((tmp_path / "images").glob("*.png"))) == 2


TRAIN = ["train.steps=2", "train.batch_size=2", "train.img_size=64", "train.eval_size=64", "train.eval_every=0",
         "train.log_every=1", "train.checkpoint_every=2", "data.loader=torch", "data.workers=0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k, v in KINDS.items() if v == "train"])
def test_teacher_digits_config_runs(name, digits, tmp_path):
    assert main(["train", "--config", str(ROOT / "configs" / f"{name}.yaml"), f"data.train={digits['train']}",
                 f"data.val={digits['val']}", f"train.out={tmp_path}", *TRAIN]) == 0
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.slow
def test_distill_coco_config_runs(digits, tmp_path):
    teacher = save(build_model("yolo-micro", num_classes=10, width=0.25).eval(), tmp_path / "teacher")
    assert main(["distill", "--config", str(ROOT / "configs" / "distill_yolov3_coco.yaml"), f"teacher={teacher}",
                 "student.model=yolo-micro", "student.width=0.25", "student.num_classes=10",
                 f"data.train={digits['train']}", f"data.val={digits['val']}", f"train.out={tmp_path / 'run'}",
                 *TRAIN]) == 0
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_classifier_digits_config_runs(digits, tmp_path):
    from fastdiode.data.crops import write_crops

    write_crops(digits["train"].parent, tmp_path / "crops", 16, progress=False)
    assert main(["train-classifier", "--config", str(ROOT / "configs" / "classifier_digits.yaml"),
                 f"data.train={tmp_path / 'crops' / 'train'}", f"data.val={tmp_path / 'crops' / 'val'}",
                 f"train.out={tmp_path / 'run'}", "train.steps=2", "train.batch_size=4", "train.eval_every=2",
                 "train.checkpoint_every=2"]) == 0
    assert (tmp_path / "run" / "best.safetensors").is_file()


SCHEDULE_KEYS = {"train.steps": "2", "train.eval_every": "0", "train.checkpoint_every": "2",
                 "stages.iterations": "[3,2,2]", "fp.warmup": "2", "fp.every": "2", "fp.stop": "4"}


def shrunk(assignment: str) -> str:
    """A row's override with a schedule length (steps, iterations) cut to the test's size; other keys as given."""
    key = assignment.split("=", 1)[0]
    return f"{key}={SCHEDULE_KEYS[key]}" if key in SCHEDULE_KEYS else assignment


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k, v in KINDS.items() if v == "demo"])
def test_demo_config_runs(name, tmp_path):
    """Every row of the config, each at a few images and steps."""
    path = next(p for p in CONFIGS if p.stem == name)
    rows = yaml.safe_load(path.read_text())["rows"]
    for row in rows:
        if row["source"] == "diode":
            row["images"] = 2 * max(1, row["images"] // 256)  # keeps which rows share a synthesis folder
        elif row.get("images"):
            row["images"] = 4  # a real row on the first N images
        row["seeds"] = row.get("seeds", [])[:2]
        row["inversion"] = [shrunk(a) for a in row.get("inversion", [])]
        row["distill"] = [shrunk(a) for a in row.get("distill", [])]
    assert main(["demo", "--config", str(path), f"out={tmp_path}",
                 "data={train: 8, val: 4, proxy: 4, holdout: 4, size: 64}",
                 "inversion.stages.resolution=[32,32,64]", "inversion.stages.batch_size=[2,2,2]",
                 "inversion.stages.iterations=[3,2,2]", "inversion.fp={enabled: true, warmup: 2, every: 2, stop: 4}",
                 "inversion.job.progress=false", "distill.data.loader=torch", "distill.data.workers=0",
                 "distill.train={steps: 2, batch_size: 2, img_size: 64, eval_size: 64, eval_every: 0, log_every: 1, "
                 "checkpoint_every: 2}", f"rows={rows}",
                 *([f"distill.classifier={ROOT / 'fastdiode' / 'assets' / 'classifier_digits.safetensors'}"]
                   if "classifier" in yaml.safe_load(path.read_text()).get("distill", {}) else [])]) == 0
    assert (tmp_path / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k, v in KINDS.items() if v == "quantize"])
def test_quantize_config_runs(name, digits, tmp_path):
    pytest.importorskip("torchao")
    import torch

    torch.manual_seed(0)
    teacher = save(build_model("yolo-micro", num_classes=10, width=0.25, input_size=64).eval(), tmp_path / "t")
    assert main(["quantize", "--config", str(ROOT / "configs" / f"{name}.yaml"), f"teacher={teacher}",
                 f"calib={digits['train']}", "calib.images=4", "calib.batch_size=2", f"val={digits['val']}",
                 f"out={tmp_path / 'out'}", "latency=false", "train.steps=2", "train.batch_size=2",
                 "data.loader=torch", "data.workers=0"]) == 0
    assert (tmp_path / "out" / "quantize.json").is_file()


def test_bench_quant_config_loads():
    """The quantization benchmark's config (benchmarks/bench_quant.py) parses, and what it names exists."""
    import sys

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_quant import BenchQuantConfig
    from fastdiode.config import load_config

    cfg = load_config(BenchQuantConfig, ROOT / "configs" / "bench_quant.yaml")
    assert len(cfg.teachers) == 2 and cfg.seeds == [0, 1, 2]
    for teacher in cfg.teachers:
        assert (ROOT / teacher.weights).is_file() and (ROOT / teacher.synthesis).is_file()
