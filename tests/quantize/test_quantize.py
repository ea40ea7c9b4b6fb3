"""fastdiode quantize end to end on tiny models: the PTQ round trip (export, quantize, save, reload, evaluate),
the reloaded program against the in-memory one, QAT on the shared loop (losses, resume), and every bad input
answered before any work."""
import json
from pathlib import Path

import pytest
import torch

from fastdiode.cli import main
from fastdiode.config import ConfigError, load_config
from fastdiode.loading import load_detector, load_teacher
from fastdiode.models import build_model, load, save
from fastdiode.models.int8_program import Int8Detector, load_int8
from fastdiode.quantize import QuantizeConfig, run_quantize
from fastdiode.quantize.calibration import calibration_batches
from fastdiode.quantize.export import export_program, int8_program
from fastdiode.runtime import RunContext

pytest.importorskip("torchao")
CPU = RunContext(torch.device("cpu"))


def config(out, teacher, calib, *extra):
    return load_config(QuantizeConfig, None, [f"teacher={teacher}", f"calib={calib}", f"out={out}",
                                              "calib.images=8", "calib.batch_size=4", *extra])


def quantize(cfg, **kw):
    return run_quantize(cfg, load_teacher(cfg.teacher), CPU, progress=False, **kw)


def test_ptq_round_trip(tmp_path, digits, teacher_path):
    cfg = config(tmp_path / "ptq", teacher_path, digits["train"], f"val={digits['val']}")
    report = quantize(cfg)
    path = tmp_path / "ptq" / "model.pt2"
    assert path.is_file() and json.loads((tmp_path / "ptq" / "quantize.json").read_text()) == report
    assert report["eval"]["int8"] is not None and report["eval"]["fp32"] is not None
    int8 = load_detector(path, quantized_ok=True)
    assert isinstance(int8, Int8Detector) and int8.num_classes == 10 and int8.input_size == 64
    # the program as reloaded computes what the program in memory computes, batch size free
    teacher = load(teacher_path).eval()
    batches = calibration_batches(cfg.calib, 64)
    program = int8_program(teacher, batches, progress=False)
    assert len(program.example_inputs[0][0]) == 2  # the file keeps its example inputs, not a calibration batch
    in_memory = program.module()
    x = batches[0][:3]
    for a, b in zip(in_memory(x), int8(x)):
        torch.testing.assert_close(a, b)
    # and close to the FP model on images like the calibration's (int8 error, not a broken graph)
    for a, b in zip(teacher(x), int8(x)):
        assert (a - b).abs().max() < 0.1 * a.abs().max()
    assert main(["eval", "--weights", str(path), "--images", str(Path(digits["val"]) / "images"), "--annotations",
                 str(Path(digits["val"]) / "annotations.json"), "--device", "cpu"]) == 0
    with pytest.raises(ValueError, match="already holds an int8 program"):
        quantize(cfg)


def test_qat_trains_with_the_table_of_terms_and_resumes_exactly(tmp_path, digits, teacher_path):
    extra = ("mode=qat", "quant.weight_bits=4", "train.steps=6", "train.checkpoint_every=3", "train.log_every=1",
             "train.batch_size=4", "data.loader=torch", "data.workers=0", "loss.kd.weight=0.5")
    full = quantize(config(tmp_path / "full", teacher_path, digits["train"], *extra))
    assert full["spec"] == "W4A8" and full["eval"]["int8"] is None  # W4 stays fake-quantized
    assert not (tmp_path / "full" / "model.pt2").exists()
    logged = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for name in ("head_kl", "layer_mse", "pseudo_label", "kd"):  # the new terms and an existing one, together
        assert name in logged[0], name
    assert logged[0]["layer_mse"] > 0 and logged[0]["mimic"] == 0
    cut = config(tmp_path / "cut", teacher_path, digits["train"], *extra)
    quantize(cut, stop_at=3)
    quantize(cut, resume=True)
    a = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert a == pytest.approx(b, rel=1e-5)
    x, y = load(tmp_path / "full" / "last", kind="fake-quant-detector"), load(tmp_path / "cut" / "last",
                                                                              kind="fake-quant-detector")
    for (name, u), v in zip(x.state_dict().items(), y.state_dict().values()):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="a fake-quantized detector .* an FP detector is expected"):
        load_detector(tmp_path / "full" / "last.safetensors")


def test_qat_w8a8_exports_the_int8_program(tmp_path, digits, teacher_path):
    report = quantize(config(tmp_path / "q", teacher_path, digits["train"], "mode=qat", "train.steps=2",
                             "train.batch_size=4", "data.loader=torch", "data.workers=0"))
    assert report["spec"] == "W8A8" and set(report["weight_error"])
    assert isinstance(load_int8(tmp_path / "q" / "model.pt2"), Int8Detector)


@pytest.mark.parametrize("extra, match", [
    (["quant.weight_bits=4"], "quant: W4A8 asked of mode=ptq"),
    (["mode=qat", "quant.weight_bits=4", "int8=true"], "int8: the int8 export runs W8A8 only"),
    (["quant.act_bits=3", "mode=qat", "quant.weight_bits=9"], "quant.weight_bits: expected one of"),
    (["train.out=elsewhere"], "train.out: not read by fastdiode quantize"),
    (["mode=int4"], "mode: 'int4' is not one of ptq, qat"),
])
def test_bad_config_is_one_clear_error(tmp_path, teacher_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        config(tmp_path, teacher_path, tmp_path, *extra)


def test_a_section_given_in_part_keeps_the_modes_defaults(tmp_path, teacher_path):
    cfg = config(tmp_path, teacher_path, tmp_path, "train.steps=5", "loss.head_kl.temperature=2", "optim.lr=3e-5")
    assert cfg.train.batch_size == 16 and cfg.loss.head_kl.weight == 0.1 and cfg.loss.head_kl.temperature == 2
    assert cfg.data.flip_p == 0 and cfg.optim.lr == 3e-5  # 3e-5 (no dot) is a string to YAML 1.1: read as a float


def test_calibration_folder_without_images(tmp_path, teacher_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="calib.data: dataset .*empty: none of its 1 images is usable"):
        quantize(config(tmp_path / "out", teacher_path, tmp_path / "empty"))
    assert not (tmp_path / "out").exists()  # nothing written before the error


def test_too_few_calibration_images(tmp_path, digits, teacher_path):
    with pytest.raises(ValueError, match="calib.images: 1000 images asked for"):
        quantize(config(tmp_path / "out", teacher_path, digits["train"], "calib.images=1000"))


def test_untraceable_model_names_the_module():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x  # data-dependent control flow

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3)
            self.odd = Branchy()

        def forward(self, x):
            return [self.odd(self.stem(x))]

    with pytest.raises(ValueError, match="cannot trace Net: it fails in module 'odd' \\(Branchy\\)"):
        export_program(Net().eval(), torch.rand(2, 3, 16, 16))


def test_teacher_of_the_wrong_kind(tmp_path, digits, teacher_path):
    from fastdiode.models.resnet import ResNet

    clf = save(ResNet(10, width=8, depths=(1, 1), input_size=16), tmp_path / "clf", [str(i) for i in range(10)])
    with pytest.raises(ValueError, match="a classifier, but an FP detector is expected"):
        load_teacher(config(tmp_path / "o", clf, digits["train"]).teacher)
    quantize(config(tmp_path / "ptq", teacher_path, digits["train"]))
    with pytest.raises(ValueError, match="an int8 program \\(fastdiode quantize\\), but an FP detector is expected"):
        load_teacher(config(tmp_path / "o", tmp_path / "ptq" / "model.pt2", digits["train"]).teacher)
    assert main(["invert", f"teacher={tmp_path / 'ptq' / 'model.pt2'}"]) == 2


def test_int8_program_refuses_another_size(tmp_path, digits, teacher_path):
    quantize(config(tmp_path / "ptq", teacher_path, digits["train"]))
    with pytest.raises(ValueError, match="exported at 64 px"):
        load_int8(tmp_path / "ptq" / "model.pt2")(torch.rand(1, 3, 96, 96))
    assert build_model  # the architectures the skeleton is rebuilt from stay registered
