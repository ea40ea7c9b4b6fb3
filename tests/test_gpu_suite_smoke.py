"""The GPU suite script and the gpu tests run end to end (tiny shapes on CPU through the Triton interpreter),
so the one command that checks and measures on a GPU is known to work before a GPU is at hand."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_gpu_suite_smoke(tmp_path):
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(tmp_path)],
                   check=True, cwd=root, capture_output=True, env={**os.environ, "TRITON_INTERPRET": "1"})
    sections = {name: json.loads((tmp_path / f"gpu_{name}_smoke.json").read_text())[name]
                for name in ("inversion", "ops", "distill", "new")}  # every section saved on its own
    assert {r["name"].split(",")[0] for r in sections["ops"]["rows"]} >= {"BN statistics pass",
                                                                           "BN-statistics loss fwd+bwd"}
    assert (tmp_path / "ops_gpu_smoke.md").read_text().startswith("# GPU suite")
    models, inversion = sections["inversion"]["model_rows"], sections["inversion"]["inversion"]
    assert [r["name"].split(" ")[0] for r in models] == ["yolo-micro"] * 4
    assert len(inversion["rows"]) == 3 and inversion["images per GPU-hour (paper schedule)"] > 0
    assert {r["name"].split(" ")[0] for r in sections["new"]["rows"]} == {"HCL", "dense", "roi_crop", "LSQ"}
    assert all(len(r["range ms"]) == 2 for r in sections["ops"]["rows"] if "ms" in r)


@pytest.mark.slow
def test_gpu_tests_run_at_tiny_sizes_on_cpu():
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "FASTDIODE_GPU_TESTS_ON_CPU": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                           str(root / "tests" / "gpu")], cwd=root, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-2000:]
    assert " passed" in done.stdout
