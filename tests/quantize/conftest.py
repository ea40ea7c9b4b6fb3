"""Fixtures of the quantization tests: tiny digits images and a tiny teacher with calibrated BN statistics."""
import pytest
import torch

from fastdiode.data.digits import build_digits
from fastdiode.models import build_model, save
from tests.helpers import TINY_DIGITS, calibrate_bn


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return build_digits(tmp_path_factory.mktemp("digits"), TINY_DIGITS, progress=False)


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    torch.manual_seed(1)
    model = calibrate_bn(build_model("yolo-micro", num_classes=10, width=0.25, input_size=64))
    return save(model, tmp_path_factory.mktemp("teacher") / "teacher", [str(i) for i in range(10)])
