"""Shared settings of the distillation tests (a module of its own: conftest names collide across folders)."""
from fastdiode.data.digits import DigitsSpec

TINY_DIGITS = DigitsSpec(train=16, val=8, proxy=8, size=64, min_digit=16, max_digit=32, max_digits=2)


def train_args(out, data, *extra):
    """Overrides of a small CPU run: yolo-micro (width 0.25) at 64 px, torch loader in-process."""
    return ["student.model=yolo-micro", "student.width=0.25", "student.num_classes=10", f"data.train={data}",
            "data.loader=torch", "data.workers=0", "train.img_size=64", "train.eval_size=64", "train.batch_size=4",
            "train.steps=6", "train.log_every=1", "train.checkpoint_every=3", "train.eval_every=0",
            "train.channels_last=false", f"train.out={out}", *extra]
