"""The quantization benchmark (``make bench-quant``; configs/bench_quant.yaml): on the digits, for each shipped
teacher,

* W8A8 post-training int8 (torchao PT2E) calibrated on real train images, DIODE images (the digits benchmark's
  synthesis), photo crops and Gaussian noise, at several image counts, each at several calibration seeds;
* W4A8 quantization-aware distillation (KL + layer MSE + pseudo-label task loss) on DIODE images, on real images and
  on photo crops, and LSQ with the real labels (no teacher), each at several training seeds, the same steps for
  every row; the learning rate chosen per teacher on the split held out from the train set (never on val);
* W4A4, the same on DIODE and on real images;
* the int8 program's latency against the FP32 model compiled the same way, batch 1 and 16 (``--section
  latency``, on a quiet machine; it refuses to time on a busy one).

Accuracy: mAP on the real val set, mean ± std over the seeds, against the FP teacher. The int8 programs are
evaluated as torch runs them without compilation (the same quantize/dequantize arithmetic); the latency section
checks that the compiled program scores the same. Every finished run is kept under ``out`` and reused, so an
interrupted benchmark continues where it stopped. Results: ``--results`` (results.json, report.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import provenance, require_quiet  # noqa: E402
from fastdiode.config import load_config  # noqa: E402
from fastdiode.data.digits import DigitsSpec, build_digits  # noqa: E402
from fastdiode.demo.config import DemoConfig  # noqa: E402
from fastdiode.demo.run import evaluate_teacher, synthesize  # noqa: E402
from fastdiode.eval import coco_map  # noqa: E402
from fastdiode.loading import load_teacher  # noqa: E402
from fastdiode.models import load  # noqa: E402
from fastdiode.models.checkpoint import checkpoint_info  # noqa: E402
from fastdiode.models.int8_program import Int8Detector, load_int8, save_int8  # noqa: E402
from fastdiode.quantize import QuantizeConfig, run_quantize  # noqa: E402
from fastdiode.quantize.calibration import calibration_batches  # noqa: E402
from fastdiode.quantize.config import CalibConfig  # noqa: E402
from fastdiode.quantize.export import int8_program  # noqa: E402
from fastdiode.quantize.latency import compare_latency  # noqa: E402
from fastdiode.runtime import RunContext  # noqa: E402
from fastdiode.runtime.backend import set_compile  # noqa: E402
from fastdiode.runtime.files import atomic_write, cached_json  # noqa: E402

METRICS = ("mAP@.5", "mAP@[.5:.95]")


@dataclass
class TeacherEntry:
    name: str = ""
    weights: str = ""
    synthesis: str = ""  # a digits benchmark config whose `diode` row makes the DIODE images


@dataclass
class PTQSection:
    sources: list[str] = field(default_factory=lambda: ["real", "diode", "photos", "noise"])
    images: list[int] = field(default_factory=lambda: [32, 128, 512])
    batch_size: int = 16


@dataclass
class QATRow:
    name: str = ""
    bits: list[int] = field(default_factory=lambda: [4, 8])
    source: str = "diode"
    labels: bool = False  # LSQ with the real labels: the task loss on them, no teacher term


@dataclass
class QATSection:
    images: int = 512
    lr_candidates: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3])
    overrides: list[str] = field(default_factory=list)
    rows: list[QATRow] = field(default_factory=list)


@dataclass
class BenchQuantConfig:
    out: str = "runs/bench_quant"
    data: DigitsSpec = field(default_factory=DigitsSpec)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    teachers: list[TeacherEntry] = field(default_factory=list)
    ptq: PTQSection = field(default_factory=PTQSection)
    qat: QATSection = field(default_factory=QATSection)
    latency_batches: list[int] = field(default_factory=lambda: [1, 16])
    latency_runs: int = 30
    latency_sizes: list[int] = field(default_factory=lambda: [320])  # larger inputs than the teachers' own


def stats_of(result: dict) -> dict:
    return {k: result["stats"][k] for k in METRICS}


def sources(cfg: BenchQuantConfig, teacher: TeacherEntry, data: dict, out: Path) -> dict[str, Path]:
    """Image folders by source; DIODE's synthesized (or finished) with the digits benchmark's diode row."""
    demo = load_config(DemoConfig, ROOT / teacher.synthesis)
    row = next(r for r in demo.rows if r.name == "diode")
    synth = out / teacher.name / "synth"
    images = max(max(cfg.ptq.images), cfg.qat.images)
    minutes = synthesize(demo, row, images, Path(teacher.weights), synth, torch.device("cpu")) / 60
    log(f"{teacher.name}: {images} DIODE images ({minutes:.1f} min per {row.images})")
    return {"real": data["train"], "diode": synth, "photos": data["photos"], "noise": data["noise"]}


def ptq_rows(cfg: BenchQuantConfig, teacher: TeacherEntry, folders: dict[str, Path], val: Path, out: Path) -> list:
    model = load(teacher.weights).eval()
    info = checkpoint_info(model, model.class_names)
    size = model.input_size
    rows = []
    set_compile(False)  # the programs' accuracy without compiling each one (the latency section checks it)
    for source in cfg.ptq.sources:
        for n in cfg.ptq.images:
            runs = []
            for seed in cfg.seeds:
                def run(source=source, n=n, seed=seed) -> dict:
                    start = time.perf_counter()
                    calib = CalibConfig(str(folders[source]), n, cfg.ptq.batch_size, seed)
                    program = int8_program(model, calibration_batches(calib, size), progress=False)
                    path = save_int8(program, out / teacher.name / "ptq" / f"{source}-{n}-seed{seed}", info)
                    result = coco_map(load_int8(path), val / "images", val / "annotations.json", size, 64,
                                      progress=False, tide=False)
                    return {**stats_of(result), "seconds": time.perf_counter() - start}
                runs.append(cached_json(out / teacher.name / "ptq" / f"{source}-{n}-seed{seed}.json", run))
            rows.append(summarize(f"W8A8 PTQ, {source}, {n} images", runs))
            log(f"{teacher.name}: {rows[-1]['row']}: mAP@[.5:.95] {rows[-1]['mAP@[.5:.95]']:.3f}")
    set_compile(True)
    return rows


def qat_config(cfg: BenchQuantConfig, teacher: TeacherEntry, row: QATRow, folder: Path, calib_folder: Path,
               out: Path, seed: int, lr: float, val: Path) -> QuantizeConfig:
    overrides = [f"teacher={teacher.weights}", "mode=qat", f"quant.weight_bits={row.bits[0]}",
                 f"quant.act_bits={row.bits[1]}", f"calib={calib_folder}", "calib.images=16", f"calib.seed={seed}",
                 f"data.train={folder}", f"data.limit={cfg.qat.images}", f"val={val}", f"out={out}",
                 f"train.seed={seed}", f"optim.lr={lr}", *cfg.qat.overrides]
    if row.labels:
        overrides += ["loss.label=1", "loss.head_kl.weight=0", "loss.layer_mse.weight=0",
                      "loss.pseudo_label.weight=0"]
    return load_config(QuantizeConfig, None, overrides)


def qat_run(qcfg: QuantizeConfig) -> dict:
    """One QAT run (or its finished report; an interrupted run resumes)."""
    out = Path(qcfg.out)
    report_path = out / "quantize.json"
    if report_path.is_file():
        return json.loads(report_path.read_text())
    report = run_quantize(qcfg, load_teacher(qcfg.teacher), RunContext(torch.device("cpu")),
                          resume=(out / "state.pt").is_file(), progress=False)
    return report


def qat_rows(cfg: BenchQuantConfig, teacher: TeacherEntry, folders: dict[str, Path], data: dict,
             out: Path) -> tuple[list, dict]:
    base = out / teacher.name / "qat"
    tune_row = QATRow("tune", [4, 8], "diode")
    tuning = {}
    for lr in cfg.qat.lr_candidates:
        q = qat_config(cfg, teacher, tune_row, folders["diode"], folders["diode"], base / f"tune-lr{lr:g}",
                       cfg.seeds[0], lr, data["holdout"])
        tuning[lr] = qat_run(q)["eval"]["fake_quant"]["mAP@[.5:.95]"]
        log(f"{teacher.name}: tuning W4A8 + KD on DIODE, lr {lr:g}: holdout mAP@[.5:.95] {tuning[lr]:.3f}")
    lr = max(tuning, key=tuning.get)
    rows = []
    for row in cfg.qat.rows:
        runs = []
        for seed in cfg.seeds:
            q = qat_config(cfg, teacher, row, folders[row.source], folders[row.source], base / row.name / f"seed{seed}",
                           seed, lr, data["val"])
            report = qat_run(q)
            runs.append({**{k: report["eval"]["fake_quant"][k] for k in METRICS},
                         "seconds": report["seconds"]})
        bits = f"W{row.bits[0]}A{row.bits[1]}"
        what = "LSQ with the real labels" if row.labels else f"QAT + KD on {row.source}"
        rows.append(summarize(f"{bits} {what}, {cfg.qat.images} images (fake-quant)", runs))
        log(f"{teacher.name}: {rows[-1]['row']}: mAP@[.5:.95] {rows[-1]['mAP@[.5:.95]']:.3f}")
    return rows, {"chosen_lr": lr, "holdout mAP@[.5:.95] by lr": {f"{k:g}": v for k, v in tuning.items()}}


def summarize(name: str, runs: list[dict]) -> dict:
    entry = {"row": name, "runs": runs, "minutes": sum(r["seconds"] for r in runs) / 60}
    for key in METRICS:
        values = [r[key] for r in runs]
        entry[key] = statistics.mean(values)
        entry[f"{key} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return entry


def top_ops(fn, x: torch.Tensor, k: int = 8) -> list[list]:
    """The ``k`` ops with the most self CPU time over 10 calls of ``fn(x)``: [name, ms per call]."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        fn(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                fn(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [[e.key, e.self_cpu_time_total / 10 / 1e3] for e in events[:k]]


def latency_section(cfg: BenchQuantConfig, out: Path, data: dict, load_check: bool = True) -> dict:
    """Per teacher: the int8 program calibrated on DIODE images (128 when a row has them), seed 0, against the FP32
    model, both compiled by inductor with freezing, alternating; the compiled program's mAP against the eager
    one's; where the time goes on each side (profiler, batch 16); and the same comparison at larger inputs
    (``latency_sizes``; programs calibrated on the same images letterboxed to that size)."""
    require_quiet(load_check)
    set_compile(True)
    results = {"provenance": provenance()}
    n = 128 if 128 in cfg.ptq.images else cfg.ptq.images[0]
    for teacher in cfg.teachers:
        model = load(teacher.weights).eval()
        path = out / teacher.name / "ptq" / f"diode-{n}-seed{cfg.seeds[0]}.pt2"
        if not path.is_file():
            raise SystemExit(f"{path}: run the accuracy section first")
        int8 = load_int8(path)
        timing = compare_latency(model, int8, tuple(cfg.latency_batches), cfg.latency_runs)
        compiled = coco_map(int8, data["val"] / "images", data["val"] / "annotations.json", int8.input_size, 64,
                            progress=False, tide=False)
        eager = json.loads(path.with_suffix(".json").read_text())
        x = torch.rand(16, 3, int8.input_size, int8.input_size)
        fp = torch.compile(model, dynamic=False)
        entry = {**timing, "compiled mAP": stats_of(compiled), "eager mAP": {k: eager[k] for k in METRICS},
                 "profile batch 16": {"fp32": top_ops(fp, x), "int8": top_ops(int8, x)}, "sizes": {}}
        for size in cfg.latency_sizes:
            calib = CalibConfig(str(out / teacher.name / "synth"), n, cfg.ptq.batch_size, cfg.seeds[0])
            program = int8_program(model, calibration_batches(calib, size), progress=False)
            info = {**checkpoint_info(model, model.class_names), "input_size": size}
            sized = Int8Detector(program.module(), model, info)
            entry["sizes"][str(size)] = compare_latency(model, sized, tuple(cfg.latency_batches), cfg.latency_runs)
        results[teacher.name] = entry
        for size, t in [(int8.input_size, timing), *((int(s), v) for s, v in entry["sizes"].items())]:
            log(f"{teacher.name} at {size} px: " + ", ".join(
                f"batch {b}: int8 {r['int8']['median_ms']:.2f} ms, fp32 {r['fp32']['median_ms']:.2f} ms "
                f"({r['speedup']:.2f}x)" for b, r in t["batches"].items()))
    return results


def log(message: str) -> None:
    print(f"bench-quant: {message}", flush=True)


def format_report(results: dict) -> str:
    lines = ["# fastdiode quantization benchmark (digits)", "",
             f"Machine: {results['machine']}. Every row: mean ± std over {results['seeds']} seeds (calibration "
             "sample or training seed); mAP on the real digits val set (500 images). PTQ rows: the int8 program; "
             "QAT rows: the fake-quantized model (W4 has no int8 kernel here). The QAT learning rate was chosen on "
             "the split held out from the train set.", ""]
    for name, teacher in results["teachers"].items():
        fp = teacher["fp32"]
        lines += [f"## {name}", "", f"FP32 teacher: mAP@.5 {fp['mAP@.5']:.3f}, mAP@[.5:.95] {fp['mAP@[.5:.95]']:.3f}. "
                  f"QAT learning rate {teacher['tuning']['chosen_lr']:g} (holdout mAP@[.5:.95] by lr: "
                  + ", ".join(f"{k}: {v:.3f}" for k, v in teacher["tuning"]["holdout mAP@[.5:.95] by lr"].items())
                  + ").", "", "| row | mAP@.5 | mAP@[.5:.95] | % of FP mAP@[.5:.95] | minutes |",
                  "|---|---:|---:|---:|---:|"]
        for r in teacher["rows"]:
            share = 100 * r["mAP@[.5:.95]"] / fp["mAP@[.5:.95]"]
            lines.append(f"| {r['row']} | {r['mAP@.5']:.3f} ± {r['mAP@.5 std']:.3f} | {r['mAP@[.5:.95]']:.3f} ± "
                         f"{r['mAP@[.5:.95] std']:.3f} | {share:.1f}% | {r['minutes']:.1f} |")
        lines.append("")
    lat = results.get("latency")
    if lat:
        lines += ["## Latency: int8 program vs FP32, both compiled by inductor with freezing", "",
                  f"{lat['provenance']['machine']}, load {lat['provenance']['load_1min']:.2f}, commit "
                  f"{lat['provenance']['commit']}; median (quartiles) of alternating runs.", "",
                  "| teacher, input | batch | FP32 ms | int8 ms | speed-up | compiled int8 mAP@[.5:.95] (eager) |",
                  "|---|---:|---:|---:|---:|---:|"]
        teachers = {name: t for name, t in lat.items() if name != "provenance"}
        for name, t in teachers.items():
            sized = [(t["size"], t, f"{t['compiled mAP']['mAP@[.5:.95]']:.3f} ({t['eager mAP']['mAP@[.5:.95]']:.3f})"),
                     *((v["size"], v, "-") for v in t.get("sizes", {}).values())]
            for size, timing, score in sized:
                for b, r in timing["batches"].items():
                    lines.append(f"| {name} at {size} px | {b} | {r['fp32']['median_ms']:.2f} "
                                 f"({r['fp32']['q1_ms']:.2f}-{r['fp32']['q3_ms']:.2f}) | {r['int8']['median_ms']:.2f} "
                                 f"({r['int8']['q1_ms']:.2f}-{r['int8']['q3_ms']:.2f}) | {r['speedup']:.2f}x | "
                                 f"{score} |")
        for name, t in teachers.items():
            lines += ["", f"Where the time goes, {name} at its size, batch 16 (self CPU ms per call, top ops):", "",
                      "| FP32 op | ms | int8 op | ms |", "|---|---:|---:|---:|"]
            for (a, ma), (b, mb) in zip(t["profile batch 16"]["fp32"], t["profile batch 16"]["int8"]):
                lines.append(f"| {a} | {ma:.2f} | {b} | {mb:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "bench_quant.yaml"))
    parser.add_argument("--section", choices=["accuracy", "latency", "all"], default="all")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "bench_quant"))
    parser.add_argument("--no-load-check", action="store_true", help="time even on a busy machine (smoke runs)")
    args = parser.parse_args()
    cfg = load_config(BenchQuantConfig, args.config)
    out, results_dir = Path(cfg.out), Path(args.results)
    data = build_digits(out / "data", cfg.data, progress=False)
    results_path = results_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if args.section in ("accuracy", "all"):
        results.update({"machine": provenance()["machine"], "seeds": len(cfg.seeds), "teachers": {}})
        for teacher in cfg.teachers:
            folders = sources(cfg, teacher, data, out)
            model = load(teacher.weights)
            fp = cached_json(out / teacher.name / "fp32.json", lambda m=model: evaluate_teacher(m, data["val"],
                                                                                            torch.device("cpu")))
            rows = ptq_rows(cfg, teacher, folders, data["val"], out)
            qat, tuning = qat_rows(cfg, teacher, folders, data, out)
            results["teachers"][teacher.name] = {"fp32": {k: fp[k] for k in METRICS}, "rows": rows + qat,
                                                 "tuning": tuning}
            results_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(results_path, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))
    if args.section in ("latency", "all"):
        results["latency"] = latency_section(cfg, out, data, not args.no_load_check)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(results_path, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))
    atomic_write(results_dir / "report.md", lambda tmp: tmp.write_text(format_report(results)))
    print(format_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
