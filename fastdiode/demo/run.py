"""DIODE end to end on the digits benchmark: build the data, load the teacher, synthesize images, distill a
student on each training source with the same student, steps and schedule, evaluate every student on the
real validation set, and write ``report.md``. Every stage reuses what an earlier run finished."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from fastdiode.config import config_hash
from fastdiode.data.digits import CLASS_NAMES, build_digits
from fastdiode.data.grid import write_grid
from fastdiode.data.images import read_image
from fastdiode.demo.config import SHIPPED_TEACHER, DemoConfig, Row, row_distill, row_inversion
from fastdiode.distill.trainer import run_training
from fastdiode.eval.coco import TIDE_MAIN, TIDE_SPECIAL
from fastdiode.eval.curves import plot_comparison
from fastdiode.eval.tide_chart import mean_tide, plot_tide
from fastdiode.inversion.job import content_hash
from fastdiode.loading import build_student, load_teacher
from fastdiode.models import load
from fastdiode.models.boxes import detections_to_targets
from fastdiode.models.detector import Detector
from fastdiode.runtime.distributed import RunContext
from fastdiode.runtime.files import atomic_write, cached_json
from fastdiode.runtime.run_dir import STATE

log = logging.getLogger("fastdiode")


def machine_state() -> dict:
    """The cores and the 1-minute load average: timings on a shared machine mean little without them (a load
    at or above the core count before a run starts means other work shared the cores)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cores": os.cpu_count(), "load_1min": load}


def evaluate_teacher(teacher: Detector, val: Path, device: torch.device) -> dict:
    from fastdiode.eval import coco_map

    return coco_map(teacher, val / "images", val / "annotations.json", batch_size=64, device=device,
                    progress=False)["stats"]


def synthesis_plan(cfg: DemoConfig) -> dict[str, tuple[str, int]]:
    """Diode row name -> (synthesis folder name, images to synthesize there). Rows whose inversion configs
    agree share one folder, named after the first of them, holding the most images any of them asks for: a
    batch is a function of (config, seed, batch id), so a row of N images trains on that folder's first N."""
    groups: dict[str, list[Row]] = {}
    for row in cfg.rows:
        if row.source == "diode":
            groups.setdefault(content_hash(row_inversion(cfg.inversion, row)), []).append(row)
    return {row.name: (rows[0].name, max(r.images for r in rows)) for rows in groups.values() for row in rows}


def synthesize(cfg: DemoConfig, row: Row, images: int, teacher_path: Path, out: Path,
               device: torch.device) -> float:
    """Run (or finish) the DIODE inversion job of ``row``'s config in ``out`` up to ``images`` images; returns
    the seconds that synthesizing the row's own images took."""
    from fastdiode.inversion.job import run_job

    inv = row_inversion(cfg.inversion, row)
    inv.teacher.weights = str(teacher_path)
    inv.job.out = str(out)
    batch = inv.batch_images
    inv.job.num_batches = math.ceil(images / batch)
    inv.validate()
    summary = out / "summary.json"
    if not summary.is_file() or json.loads(summary.read_text())["batches_done"] < inv.job.num_batches:
        teacher = load_teacher(inv.teacher)
        ctx = RunContext(device)
        run_job(inv, teacher.model, ctx, teacher.class_names, ctx.record(inv.run.backend, teacher.source))
    done = json.loads(summary.read_text())
    return done["seconds"] * math.ceil(row.images / batch) / done["batches_done"]


def distill(cfg: DemoConfig, row: Row, source: Path, teacher_path: Path, val: Path, out: Path,
            device: torch.device, seed: int | None = None) -> dict:
    """Distill the row's student on ``source`` (its first ``row.images`` images when set; or finish an
    interrupted run) with the row's distillation overrides and ``seed``; returns its summary."""
    tc = row_distill(cfg.distill, row, seed)
    tc.data.train, tc.data.val, tc.teacher.weights, tc.train.out = str(source), str(val), str(teacher_path), str(out)
    tc.data.limit = row.images
    tc.validate()
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        if summary.get("config_hash") != config_hash(tc):
            raise ValueError(f"{out} holds a student trained with a different config; remove it or set a new out")
        if summary["steps"] >= tc.train.steps:
            return summary
    teacher = load(teacher_path)
    ctx = RunContext(device)
    return run_training(tc, build_student(tc, teacher), teacher, ctx, teacher.class_names,
                        resume=(out / STATE).is_file(), record=ctx.record(tc.run.backend, str(teacher_path)))


@torch.no_grad()
def predictions_grid(teacher: Detector, image_dir: Path, path: Path, n: int = 16) -> None:
    """The teacher's detections (confidence > 0.3) on the first ``n`` images of a folder."""
    files = sorted(image_dir.glob("*.png"))[:n]
    if not files:
        return
    images = torch.stack([read_image(f) for f in files])
    dets = teacher.detect(teacher.eval()(images), 0.3, 0.45, 16)
    write_grid(path, images, detections_to_targets(dets, images.shape[-1], images.shape[-2], 16), CLASS_NAMES)


def run_demo(cfg: DemoConfig, device: torch.device, rows: list[str] | None = None) -> list[dict]:
    """Run the rows of ``cfg`` (only those named in ``rows`` and their baselines, when given); prints the table
    and writes ``report.md`` and ``results.json`` for the rows run. Returns the table rows."""
    selected = cfg.selected_rows(rows)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start, machine = time.perf_counter(), {"start": machine_state()}
    data = build_digits(out / "data", cfg.data)
    teacher_path = Path(cfg.teacher) if cfg.teacher else SHIPPED_TEACHER
    teacher = load(teacher_path)
    if teacher.num_classes != len(CLASS_NAMES):
        raise ValueError(f"teacher {teacher_path}: {teacher.num_classes} classes, the digits have 10")
    teacher_stats = cached_json(out / "teacher_eval.json", lambda: evaluate_teacher(teacher, data["val"], device))
    log.info("fastdiode demo: teacher %s: mAP@.5 %.3f on the digits val set", teacher_path,
             teacher_stats["mAP@.5"])
    table, histories = [], {}
    plan = synthesis_plan(cfg)
    for row in selected:
        synth_seconds = 0.0
        if row.source == "diode":
            folder, images = plan[row.name]
            source = out / "synth" / folder
            synth_seconds = synthesize(cfg, row, images, teacher_path, source, device)
        else:
            source = data["train" if row.source == "real" else row.source]
        finals, seconds = [], synth_seconds
        for seed in row.seeds or [None]:
            run_dir = out / "students" / row.name / (f"seed{seed}" if row.seeds else "")
            summary = distill(cfg, row, source, teacher_path, data[row.eval_on], run_dir, device, seed)
            metrics = (run_dir / "metrics.jsonl").read_text()
            histories[row.name if seed is None or seed == row.seeds[0] else f"{row.name} seed {seed}"] = \
                [json.loads(line) for line in metrics.splitlines()]
            finals.append(summary["final_eval"] or {})
            seconds += summary["seconds"]
        entry = {"row": row.name, "source": row.source, "seeds": row.seeds, "eval_on": row.eval_on,
                 "baseline": row.baseline, "images": row.images or len(list((Path(source) / "images").glob("*.png"))),
                 "minutes": seconds / 60, "synth_minutes": synth_seconds / 60,
                 "tide": mean_tide([f.get("tide") for f in finals]), "tide runs": [f.get("tide") for f in finals]}
        for key in MAP_KEYS:
            values = torch.tensor([f.get(key, 0.0) for f in finals], dtype=torch.float64)
            entry[key] = values.mean().item()
            entry[f"{key} std"] = values.std().item() if len(values) > 1 else None
            entry[f"{key} runs"] = values.tolist()
        table.append(entry)
    add_paired_differences(table)
    plot_comparison(histories, out / "curves.png")
    tides = {r["row"]: r["tide"] for r in table if r["tide"]}
    if tides:
        plot_tide(tides, out / "tide.png", "TIDE errors of each row's student on the real digits val set")
    diode = [r for r in selected if r.source == "diode"]
    if diode:
        synth = out / "synth" / plan[diode[0].name][0]
        predictions_grid(teacher, synth / "images", out / "teacher_on_synth.png")
    machine["end"] = machine_state()
    report = format_demo_report(cfg, teacher_stats, table, (time.perf_counter() - start) / 60,
                                diode[0].name if diode else None, machine)
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(report))
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(
        {"teacher": teacher_stats, "rows": table, "machine": machine}, indent=1)))
    print(format_table(teacher_stats, table, cfg.data.train))
    print(f"\nwrote {out / 'report.md'}")
    return table


MAP_KEYS = ("mAP@.5", "mAP@[.5:.95]")
# TIDE errors (dAP@0.5 points) whose paired change each row with a baseline reports.
PAIRED_TIDE = (("main", "Cls"), ("main", "Loc"), ("main", "Dupe"), ("special", "FalsePos"))


def paired_interval(diffs: list[float]) -> dict:
    """Mean of paired differences, its 95% t-interval (None with fewer than two pairs) and n."""
    from scipy import stats

    d = torch.tensor(diffs, dtype=torch.float64)
    n, mean = len(d), d.mean().item() if len(d) else float("nan")
    half = stats.t.ppf(0.975, n - 1) * d.std().item() / n ** 0.5 if n > 1 else None
    return {"mean": mean, "ci95": None if half is None else [mean - half, mean + half], "n": n}


def paired_differences(row: dict, base: dict) -> dict:
    """The row minus its baseline over the seeds both ran, per metric (mAP; and TIDE's errors, "TIDE Cls" ...,
    where both rows stored them per seed): mean, 95% t-interval, n."""
    seeds, base_seeds = row["seeds"] or [None], base["seeds"] or [None]
    pairs = [(j, base_seeds.index(s)) for j, s in enumerate(seeds) if s in base_seeds]
    out = {key: paired_interval([row[f"{key} runs"][j] - base[f"{key} runs"][i] for j, i in pairs])
           for key in MAP_KEYS}
    tides = row.get("tide runs"), base.get("tide runs")
    if all(t and None not in t for t in tides):
        for kind, k in PAIRED_TIDE:
            out[f"TIDE {k}"] = paired_interval([tides[0][j][kind][k] - tides[1][i][kind][k] for j, i in pairs])
    return out


def add_paired_differences(table: list[dict]) -> None:
    """Set ``vs baseline`` on every table row that names a baseline."""
    rows = {r["row"]: r for r in table}
    for r in table:
        if r.get("baseline") is not None:
            r["vs baseline"] = paired_differences(r, rows[r["baseline"]])


def format_interval(d: dict, scale: float = 1.0, digits: int = 1) -> str:
    """'+1.3 [-0.2, +2.8]': a paired difference with its 95% interval (the mean alone with one pair)."""
    interval = f" [{scale * d['ci95'][0]:+.{digits}f}, {scale * d['ci95'][1]:+.{digits}f}]" if d["ci95"] else ""
    return f"{scale * d['mean']:+.{digits}f}{interval}"


def format_paired_table(table: list[dict]) -> str:
    """Each row with a baseline: its paired change in mAP (points) and in TIDE's errors (dAP@0.5 points; negative
    is fewer errors), with 95% intervals."""
    keys = [*MAP_KEYS, *(f"TIDE {k}" for _, k in PAIRED_TIDE)]
    lines = ["| row (pairs) | vs | " + " | ".join(f"Δ {k.removeprefix('TIDE ')}" for k in keys) + " |",
             "|---|---|" + "---:|" * len(keys)]
    for r in table:
        d = r.get("vs baseline")
        if d:
            cells = [(format_interval(d[k], 100.0) if k in MAP_KEYS else format_interval(d[k], digits=2))
                     if k in d else "-" for k in keys]
            lines.append(f"| {r['row']} ({d['mAP@.5']['n']}) | {r['baseline']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(teacher: dict, table: list[dict], teacher_images: int) -> str:
    lines = ["| data source (seeds) | mAP@0.5 | mAP@[.5:.95] | % of teacher mAP@0.5 | vs baseline, mAP@[.5:.95] "
             "(paired, 95% interval) | images | minutes |",
             "|---|---:|---:|---:|---|---:|---:|",
             f"| teacher (trained on real labels) | {teacher['mAP@.5']:.3f} | {teacher['mAP@[.5:.95]']:.3f} | 100% "
             f"| | {teacher_images} | - |"]
    for r in table:
        share = 100 * r["mAP@.5"] / teacher["mAP@.5"] if teacher["mAP@.5"] else 0.0
        fmt = {k: f"{r[k]:.3f}" + (f" ± {r[k + ' std']:.3f}" if r.get(k + " std") is not None else "")
               for k in ("mAP@.5", "mAP@[.5:.95]")}
        versus = ""
        if r.get("vs baseline"):
            d = r["vs baseline"]["mAP@[.5:.95]"]
            versus = f"{format_interval(d, 100.0)} points vs {r['baseline']} (n={d['n']})"
        where = "" if r.get("eval_on", "val") == "val" else ", on holdout"
        lines.append(f"| {r['row']} ({r['source']}{where}, {len(r['seeds']) or 1}) | {fmt['mAP@.5']} | "
                     f"{fmt['mAP@[.5:.95]']} | {share:.0f}% | {versus} | {r['images']} | {r['minutes']:.1f} |")
    return "\n".join(lines)


def format_tide_table(table: list[dict]) -> str:
    keys = [*(("main", k) for k in TIDE_MAIN), *(("special", k) for k in TIDE_SPECIAL)]
    lines = ["| row | " + " | ".join(k for _, k in keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in table:
        if r["tide"]:
            lines.append(f"| {r['row']} | " + " | ".join(f"{r['tide'][kind][k]:.2f}" for kind, k in keys) + " |")
    return "\n".join(lines)


def format_demo_report(cfg: DemoConfig, teacher: dict, table: list[dict], minutes: float, synth_row: str | None,
                       machine: dict) -> str:
    """The markdown report; ``synth_row``: the diode row whose synthesized images it shows (None: no diode row)."""
    student = cfg.distill.student
    load = [machine[k]["load_1min"] for k in ("start", "end")]
    cores = machine["start"]["cores"]
    state = f"{cores} cores"
    if None not in load:
        state += f", 1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end"
        state += " (at or above the core count at the start: other work shared the cores)" if load[0] >= cores else ""
    loss = cfg.distill.loss  # every demo student has the teacher, so the defaults are DIODE's (1, 0)
    distill, label = (1.0 if loss.distill is None else loss.distill), (0.0 if loss.label is None else loss.label)
    objective = " + ".join([f"{distill:g} × mimic learning"] * bool(distill) +
                           [f"{label:g} × the detector loss on labels"] * bool(label))
    holdout = (f", except rows marked 'on holdout' (the {cfg.data.holdout} images held out from the train set, on "
               "which settings are chosen)" if cfg.data.holdout else "")
    parts = [
        "# fastdiode digits benchmark", "",
        f"Teacher: {cfg.teacher or 'the shipped digits teacher'}; student: {student.model} (width {student.width}), "
        f"{cfg.distill.train.steps} steps of {cfg.distill.train.batch_size} images at {cfg.distill.train.img_size} px "
        f"({objective} unless a row says otherwise), the same for every row. Every student is evaluated on the real "
        f"digits validation set ({cfg.data.val} images){holdout}; rows with several seeds give mean ± std "
        "over their runs, and a row with a baseline the paired difference over the seeds both ran, with its 95% "
        "t-interval. "
        f"Synthesis and distillation: {sum(r['minutes'] for r in table):.1f} min; this run: "
        f"{minutes:.1f} min (finished rows are reused). Machine: {state}.", "",
        *([] if len(table) == len(cfg.rows) else
          [f"Rows run: {len(table)} of the config's {len(cfg.rows)} (`--rows`); the others are not in this report.",
           ""]),
        format_table(teacher, table, cfg.data.train), "",
        "Training curves (validation mAP of each student):", "", "![curves](curves.png)", "",
    ]
    if any(r["tide"] for r in table):
        parts += ["TIDE's error breakdown of the final students (dAP@0.5 points; mean over seeds; lower is better):",
                  "", format_tide_table(table), "", "![tide](tide.png)", ""]
    if any(r.get("vs baseline") for r in table):
        parts += ["Paired differences to each row's baseline over the seeds both ran, with 95% t-intervals: mAP in "
                  "points, TIDE's errors in dAP@0.5 points (negative is fewer errors):", "",
                  format_paired_table(table), ""]
    if synth_row is not None:
        name = synthesis_plan(cfg)[synth_row][0]
        parts += ["Synthesized images with their target boxes:", "", f"![synthesized](synth/{name}/preview.png)", "",
                  "The teacher's detections on them (confidence > 0.3):", "", "![teacher](teacher_on_synth.png)", ""]
    return "\n".join(parts)
