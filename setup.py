"""Install fastdiode; the top-level kernels/ folder becomes the subpackage fastdiode.kernels."""
from setuptools import find_packages, setup

setup(
    name="fastdiode",
    version="0.1.0",
    description="Fast data-free knowledge distillation of object detectors (DIODE) in PyTorch + Triton",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Every package under fastdiode/ (found, never listed by hand), plus kernels/ installed as fastdiode.kernels.
    packages=find_packages(include=["fastdiode", "fastdiode.*"]) + ["fastdiode.kernels"],
    package_dir={"fastdiode.kernels": "kernels"},
    package_data={"fastdiode": ["assets/*.yaml", "assets/*.json", "assets/*.safetensors",
                                "models/descriptions/*.yaml"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy",
        "pyyaml",
        "tqdm",
        "safetensors",
        "pillow",
        "pycocotools",
        "scikit-learn",  # the digits benchmark's handwritten digits and photographs
        "matplotlib",  # loss and mAP curves
        "tidecv",  # TIDE's error breakdown of every evaluation
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "faster-coco-eval", "ruff"],
        "quantize": ["torchao>=0.13"],  # fastdiode quantize: the PT2E int8 flow
        "dali": ["nvidia-dali-cuda120; platform_system == 'Linux'"],
    },
    entry_points={"console_scripts": ["fastdiode = fastdiode.cli:main"]},
)
