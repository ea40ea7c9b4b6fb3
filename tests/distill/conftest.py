"""A few tiny digits images, a tiny teacher checkpoint and a helper that runs the trainer in-process."""
import pytest

from fastdiode.data.digits import DigitsSpec, build_digits
from fastdiode.models import build_model, save

TINY_DIGITS = DigitsSpec(train=16, val=8, proxy=8, size=64, min_digit=16, max_digit=32, max_digits=2)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return build_digits(tmp_path_factory.mktemp("digits"), TINY_DIGITS, progress=False)


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    import torch

    torch.manual_seed(1)
    model = build_model("yolo-micro", num_classes=10, width=0.25, input_size=64).eval()
    return save(model, tmp_path_factory.mktemp("teacher") / "teacher", [str(i) for i in range(10)])


def train_args(out, data, *extra):
    """Overrides of a small CPU run: yolo-micro (width 0.25) at 64 px, torch loader in-process."""
    return ["student.model=yolo-micro", "student.width=0.25", "student.num_classes=10", f"data.train={data}",
            "data.loader=torch", "data.workers=0", "train.img_size=64", "train.eval_size=64", "train.batch_size=4",
            "train.steps=6", "train.log_every=1", "train.checkpoint_every=3", "train.eval_every=0",
            "train.channels_last=false", f"train.out={out}", *extra]
