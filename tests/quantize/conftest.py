"""Fixtures of the quantization tests: a tiny teacher with calibrated BN statistics (digits: tests/conftest.py)."""
import pytest
import torch

from fastdiode.models import build_model, save
from tests.helpers import calibrate_bn


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    torch.manual_seed(1)
    model = calibrate_bn(build_model("yolo-micro", num_classes=10, width=0.25, input_size=64))
    return save(model, tmp_path_factory.mktemp("teacher") / "teacher", [str(i) for i in range(10)])
