"""Fake-quantized detectors: BN folding keeps the function, which convs stay in float, LSQ's initial step, the
checkpoint round trip, and the copy with quantized weights that the int8 export calibrates."""
import copy
import math

import pytest
import torch

from fastdiode.models import build_model, load, save
from fastdiode.models.fake_quant import (
    QuantConv2d,
    QuantSpec,
    fake_quantize,
    fold_batchnorm,
    initialize_steps,
    quantizers,
    running_convs,
    with_quantized_weights,
)
from tests.helpers import calibrate_bn


def models():
    torch.manual_seed(0)
    yield calibrate_bn(build_model("yolo-micro", num_classes=4, width=0.25, input_size=64))
    yield calibrate_bn(build_model("yolov8-micro", num_classes=4, input_size=64))


@pytest.mark.parametrize("model", list(models()), ids=["yolov3-family", "yolov8"])
def test_folding_batchnorm_keeps_the_function(model):
    model = copy.deepcopy(model).double()  # in float64 the fold is exact to rounding
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for a, b in zip(model(x), folded(x)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("model", list(models()), ids=["yolov3-family", "yolov8"])
def test_first_conv_and_head_outputs_stay_float(model):
    convs = running_convs(model)
    q = fake_quantize(copy.deepcopy(model), QuantSpec(4, 8))
    assert q.float_convs[0] == convs[0]
    heads = q.float_convs[1:]
    assert len(heads) == (2 if model.name == "yolo-micro" else 6)  # a 1x1 per [yolo] layer; a cv2 and a cv3 per level
    quantized = [n for n, m in q.named_modules() if isinstance(m, QuantConv2d)]
    assert sorted(quantized + q.float_convs) == sorted(convs)  # every conv that runs, once
    assert running_convs(q) == convs  # the same names on both: the MSE term pairs them
    everything = fake_quantize(copy.deepcopy(model), QuantSpec(8, 8, float_first=False, float_head=False))
    assert everything.float_convs == []


def test_initial_step_is_lsq_rule_and_the_step_learns():
    model = next(models())
    q = fake_quantize(copy.deepcopy(model), QuantSpec(4, 4, weight_per_channel=True))
    x = torch.rand(2, 3, 64, 64)
    initialize_steps(q, x)
    conv = next(m for m in q.modules() if isinstance(m, QuantConv2d))
    w = conv.conv.weight.detach()
    expected = 2 * w.abs().flatten(1).mean(1) / math.sqrt(7)
    torch.testing.assert_close(conv.weight_quant.step.detach(), expected)
    sum(o.square().mean() for o in q.train()(x)).backward()
    assert all(qz.step.grad is not None and qz.step.grad.abs().sum() > 0 for qz in quantizers(q))


def test_checkpoint_round_trip_and_the_fp_detector_error(tmp_path):
    model = next(models())
    q = fake_quantize(copy.deepcopy(model), QuantSpec(4, 8))
    x = torch.rand(2, 3, 64, 64)
    initialize_steps(q, x)
    save(q, tmp_path / "q", [str(i) for i in range(4)])
    back = load(tmp_path / "q", kind="fake-quant-detector")
    assert back.fake_quant == QuantSpec(4, 8)
    for a, b in zip(q.eval()(x), back.eval()(x)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="a fake-quantized detector .* but an FP detector is expected"):
        load(tmp_path / "q")


def test_quantized_weights_copy_holds_the_grid_and_no_quantizer():
    model = next(models())
    q = fake_quantize(copy.deepcopy(model), QuantSpec(4, 8))
    initialize_steps(q, torch.rand(2, 3, 64, 64))
    plain = with_quantized_weights(q)
    assert not quantizers(plain) and getattr(plain, "fake_quant", None) is None
    name, conv = next((n, m) for n, m in q.named_modules() if isinstance(m, QuantConv2d))
    w = plain.get_submodule(name).weight
    levels = torch.unique(torch.round(w / conv.weight_quant.step.detach()))
    assert levels.min() >= -8 and levels.max() <= 7
    torch.testing.assert_close(w / conv.weight_quant.step.detach(), torch.round(w / conv.weight_quant.step.detach()))
