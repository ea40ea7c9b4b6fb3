"""Fixtures of the distillation tests: a tiny teacher and crop classifier (digits: tests/conftest.py)."""
import pytest

from fastdiode.models import build_model, save


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    import torch

    torch.manual_seed(1)
    model = build_model("yolo-micro", num_classes=10, width=0.25, input_size=64).eval()
    return save(model, tmp_path_factory.mktemp("teacher") / "teacher", [str(i) for i in range(10)])


@pytest.fixture(scope="session")
def classifier_path(tmp_path_factory):
    """A tiny random crop classifier of the digits' 10 classes at 16 px (DICOD's terms read it)."""
    import torch

    from fastdiode.models.resnet import ResNet

    torch.manual_seed(2)
    model = ResNet(10, width=8, depths=(1, 1), input_size=16).eval()
    return save(model, tmp_path_factory.mktemp("classifier") / "classifier", [str(i) for i in range(10)])
