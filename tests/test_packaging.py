"""A non-editable install from a built wheel has every package and subcommand (a hand-kept package list once left
``fastdiode.classify`` out of the wheel, and editable installs could not notice)."""
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from fastdiode.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, cwd):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_every_package_and_subcommand(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("fastdiode", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src,
        cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("fastdiode-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # the dependencies (torch, triton, ...) come from this environment's site-packages, without its .pth files
    # (which hold the editable install of the checkout)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    packages = Path(run(python, "-c", purelib, cwd=tmp_path).strip())
    (packages / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)

    where = run(python, "-c", "import fastdiode, fastdiode.classify, fastdiode.kernels, fastdiode.training, "
                "fastdiode.distill.terms, fastdiode.demo.run; from pathlib import Path; "
                "import fastdiode.demo.config as d; assert d.DEFAULT_CONFIG.is_file() and d.SHIPPED_TEACHER.is_file(); "
                "from fastdiode.models import build_model; build_model('yolo11n'); "
                "print(Path(fastdiode.__file__).parent, Path(fastdiode.kernels.__file__).parent)", cwd=tmp_path)
    package, kernels = where.split()
    assert Path(package).is_relative_to(venv) and Path(kernels) == Path(package) / "kernels"
    fastdiode = venv / "bin" / "fastdiode"
    assert "invert" in run(fastdiode, "--help", cwd=tmp_path)
    (commands,) = [a.choices for a in build_parser()._actions if a.dest == "command"]
    assert {"invert", "distill", "train", "eval", "data", "train-classifier", "demo"} <= set(commands)
    for command in commands:
        assert f"usage: fastdiode {command}" in run(fastdiode, command, "--help", cwd=tmp_path)
