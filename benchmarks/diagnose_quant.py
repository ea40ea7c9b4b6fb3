"""Which layers lose most when a detector is quantized (bench-quant's QAT rows): for each row's seed-0 model, the
relative error of every conv output against the FP teacher's (BN folded: the same function) on real val images,
||y_q − y||² / ||y||², and the rows' loss curves side by side.

    python benchmarks/diagnose_quant.py [--config configs/bench_quant.yaml] [--results benchmarks/results/bench_quant]

Writes diagnosis.json and diagnosis.md (and qat_curves.png) to ``--results``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quant import BenchQuantConfig  # noqa: E402
from fastdiode.config import load_config  # noqa: E402
from fastdiode.data.images import letterbox, read_image  # noqa: E402
from fastdiode.models import load  # noqa: E402
from fastdiode.models.fake_quant import fold_batchnorm  # noqa: E402
from fastdiode.models.taps import FeatureTaps  # noqa: E402
from fastdiode.runtime.files import atomic_write, read_jsonl  # noqa: E402

IMAGES = 64


@torch.no_grad()
def layer_errors(teacher: torch.nn.Module, student: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Per conv (in the order they run): the student's relative squared error against the teacher's output."""
    with FeatureTaps(teacher, "convs") as t_taps, FeatureTaps(student, "convs") as s_taps:
        teacher(images)
        student(images)
        return {name: float(((s - t) ** 2).sum() / (t ** 2).sum().clamp_min(1e-12))
                for name, s, t in zip(t_taps.names, s_taps.features, t_taps.features)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "bench_quant.yaml"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "bench_quant"))
    args = parser.parse_args()
    cfg = load_config(BenchQuantConfig, args.config)
    out, results = Path(cfg.out), Path(args.results)
    val = sorted((out / "data" / "val" / "images").glob("*.png"))[:IMAGES]
    diagnosis, curves = {}, {}
    for teacher in cfg.teachers:
        fp = load(teacher.weights).eval()
        images = torch.stack([letterbox(read_image(p), fp.input_size)[0] for p in val])
        folded = fold_batchnorm(copy.deepcopy(fp))
        rows = {}
        for row in cfg.qat.rows:
            run = out / teacher.name / "qat" / row.name / f"seed{cfg.seeds[0]}"
            if not (run / "last.json").is_file():
                continue
            student = load(run / "last", kind="fake-quant-detector").eval()
            errors = layer_errors(folded, student, images)
            rows[row.name] = {"mean": sum(errors.values()) / len(errors), "last conv": list(errors.values())[-1],
                              "worst": sorted(errors.items(), key=lambda kv: -kv[1])[:5], "layers": errors}
            curves[f"{teacher.name} {row.name}"] = [e for e in read_jsonl(run / "metrics.jsonl") if "loss" in e]
        diagnosis[teacher.name] = rows
    results.mkdir(parents=True, exist_ok=True)
    atomic_write(results / "diagnosis.json", lambda tmp: tmp.write_text(json.dumps(diagnosis, indent=1)))
    lines = ["# Which layers lose most (bench-quant QAT rows, seed 0)", "",
             f"Relative squared error ||y_q − y||² / ||y||² of every conv output against the FP teacher's, on {IMAGES} "
             "real val images; the mean over layers, the last conv's, and the five worst layers.", ""]
    for name, rows in diagnosis.items():
        lines += [f"## {name}", "", "| row | mean over layers | last conv | worst layers |", "|---|---:|---:|---|"]
        for row, d in rows.items():
            worst = ", ".join(f"{n} {v:.3f}" for n, v in d["worst"])
            lines.append(f"| {row} | {d['mean']:.4f} | {d['last conv']:.4f} | {worst} |")
        lines.append("")
    atomic_write(results / "diagnosis.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    plot_curves(curves, results / "qat_curves.png")
    print("\n".join(lines))
    return 0


def plot_curves(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, entries in curves.items():
        ax.plot([e["step"] for e in entries], [e["loss"] for e in entries], label=name)
    ax.set(xlabel="step", ylabel="training loss (each row's own objective)", yscale="log",
           title="QAT rows, seed 0")
    ax.legend(fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
