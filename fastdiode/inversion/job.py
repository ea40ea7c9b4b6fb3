"""A whole inversion job: batches of images written as a ready-to-train dataset, resumable and shardable.

Output folder: images/*.png (rounded to uint8), labels/*.txt (YOLO), annotations.json (COCO),
manifest.jsonl (one line per finished or failed batch: id, seed, config hash, per-stage losses, seconds),
summary.json and preview.png (the first batch with its boxes). Every file is written atomically and a
batch's manifest line only after all its files, so a rerun after a crash skips finished batches and redoes
the interrupted one identically (its content is a function of config, seed and batch id). Under torchrun,
rank r takes batch ids b with b % world == r, keeps its own manifest, and rank 0 merges at the end.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from fastdiode.config import config_hash, to_dict
from fastdiode.data.grid import write_grid
from fastdiode.data.images import write_png
from fastdiode.data.labels import read_yolo_labels, write_coco_json, write_yolo_labels
from fastdiode.inversion.config import InversionConfig
from fastdiode.inversion.inverter import DiodeInverter, Execution
from fastdiode.inversion.targets import LabelTargets, clip_to_image, one_box_targets
from fastdiode.models.detector import Detector
from fastdiode.runtime.distributed import RunContext, RunRecord
from fastdiode.runtime.files import append_jsonl, atomic_write, read_jsonl
from fastdiode.runtime.schedule import derive_seed

log = logging.getLogger("fastdiode")


# Keys that say where and how long a job runs, not what its images are: a job may be moved or extended.
JOB_ONLY_KEYS = ("job.out", "job.num_batches", "job.progress", "job.log_every")


def content_hash(cfg: InversionConfig) -> str:
    """What a batch's images depend on: the config without the job-only keys."""
    return config_hash(cfg, JOB_ONLY_KEYS)


def image_name(batch: int, index: int) -> str:
    return f"b{batch:06d}_{index:04d}"


def batch_targets(cfg: InversionConfig, batch: int, labels: LabelTargets | None, num_classes: int,
                  device) -> torch.Tensor:
    size = cfg.batch_images
    if labels is not None:
        return labels.batch(batch, size, device)
    gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.job.seed, batch, -2))
    return one_box_targets(size, num_classes, cfg.targets.capacity, gen, cfg.targets.min_size,
                           cfg.targets.max_size)


def merge_outputs(cfg: InversionConfig, out: Path, class_names: list[str], world: int, record: RunRecord,
                  execution: Execution) -> dict:
    """annotations.json and summary.json from every rank's manifest (run by rank 0 at the end)."""
    entries = [e for r in range(world) for e in read_jsonl(out / manifest_name(r))]
    done = sorted((e for e in entries if e["status"] == "ok"), key=lambda e: e["batch"])
    files = []
    size = cfg.stages.resolution[-1]
    for e in done:
        for i in range(e["images"]):
            name = image_name(e["batch"], i)
            files.append((f"{name}.png", size, size, read_yolo_labels(out / "labels" / f"{name}.txt")))
    write_coco_json(out / "annotations.json", files, class_names)
    seconds = sum(sum(e["seconds"]) for e in done)
    warm = done[1:] or done  # the first batch carries compilation and warm-up
    per_stage = [sum(e["seconds"][s] for e in warm) / max(sum(e["iterations"][s] for e in warm), 1)
                 for s in range(cfg.num_stages)]
    warm_seconds = sum(sum(e["seconds"]) for e in warm)
    summary = {"images": len(files), "batches_done": len(done),
               "batches_failed": sorted(e["batch"] for e in entries if e["status"] == "failed"),
               "seconds": seconds, "seconds_per_iteration_per_stage": per_stage,
               "images_per_hour": 3600 * sum(e["images"] for e in warm) / warm_seconds if warm_seconds else 0.0,
               "config_hash": content_hash(cfg), "run": record.as_dict(), "execution": execution.as_dict()}
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return summary


class StageProgress:
    """Advances the bar by one step and estimates the time left stage by stage: each stage's seconds per step
    come from that stage's own steps (the first step after a change of stage, which carries resizing and
    compilation, is left out), so the estimate does not jump at every change of stage. A stage not yet seen is
    estimated from a seen one, scaled by pixels per step (batch x resolution²)."""

    def __init__(self, bar, steps_left: list[int], work: list[float]):
        self.bar, self.left, self.work = bar, steps_left, work
        self.seconds, self.steps = [0.0] * len(work), [0] * len(work)
        self.batch, self.stage, self.last = None, None, time.perf_counter()

    def for_batch(self, batch: int):
        self.batch, self.stage = batch, None
        return self

    def eta(self) -> float | None:
        known = [s for s, n in enumerate(self.steps) if n]
        if not known:
            return None
        ref = known[-1]
        rate = [self.seconds[s] / self.steps[s] if self.steps[s] else
                self.seconds[ref] / self.steps[ref] * self.work[s] / self.work[ref] for s in range(len(self.work))]
        return sum(n * r for n, r in zip(self.left, rate))

    def __call__(self, stage: int) -> None:
        now = time.perf_counter()
        if stage == self.stage:
            self.seconds[stage] += now - self.last
            self.steps[stage] += 1
        self.last, self.left[stage] = now, max(self.left[stage] - 1, 0)
        if stage != self.stage or self.bar.n % 10 == 0:
            self.stage = stage
            eta = self.eta()
            left = "" if eta is None else f", {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d} left"
            self.bar.set_postfix_str(f"batch {self.batch} stage {stage}{left}", refresh=False)
        self.bar.update(1)


@torch.no_grad()
def verify(teacher: Detector, verifier: Detector | None, images: torch.Tensor, targets: torch.Tensor,
           device) -> dict:
    """P/R (at confidence 0.25) and AP@0.5 of the teacher's and the verifier's predictions against the final
    targets: does the teacher see what was asked for, and does an independent detector agree?"""
    from fastdiode.eval.agreement import agreement

    report = {}
    for name, net in (("teacher", teacher), ("verifier", verifier)):
        if net is not None:
            dets = net.detect(net.eval()(images.to(device)), conf_thres=0.001, iou_thres=0.6)
            report[name] = agreement(dets, targets, images.shape[-1])
    return report


def manifest_name(rank: int) -> str:
    return "manifest.jsonl" if rank == 0 else f"manifest.rank{rank}.jsonl"


def run_job(cfg: InversionConfig, teacher: Detector, ctx: RunContext, class_names: list[str],
            record: RunRecord | None = None, verifier: Detector | None = None) -> dict | None:
    """Generate the job's batches that rank ``ctx.rank`` owns and its manifest does not hold yet; rank 0 then
    merges. ``record`` (default: ``ctx``'s, with the run's backend) goes into the summary. With a ``verifier``,
    every batch's manifest line carries the teacher's and the verifier's P/R/AP@0.5 against the final targets.
    Returns the summary on rank 0 (None on the others)."""
    from tqdm import tqdm

    device, rank, world = ctx.device, ctx.rank, ctx.world
    record = record or ctx.record(cfg.run.backend)
    if verifier is not None and verifier.num_classes != teacher.num_classes:
        raise ValueError(f"verifier: {cfg.verifier} has {verifier.num_classes} classes, the teacher "
                         f"{teacher.num_classes}")
    out = Path(cfg.job.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    if rank == 0:
        atomic_write(out / "config.json", lambda tmp: tmp.write_text(json.dumps(to_dict(cfg), indent=1)))
    manifest = out / manifest_name(rank)
    entries = read_jsonl(manifest)
    chash = content_hash(cfg)
    stale = [e["batch"] for e in entries if e.get("config_hash") != chash]
    if stale:
        raise ValueError(f"job.out: {out} holds batches made with a different config (batch {stale[0]} of "
                         f"{manifest.name}); rerun with that config, or choose a new job.out")
    done = {e["batch"] for e in entries}
    todo = [b for b in range(cfg.job.num_batches) if b % world == rank and b not in done]
    if done:
        log.info("fastdiode: resuming %s: %d batches already done, %d to go", out, len(done), len(todo))
    labels = None
    if cfg.targets.sampler == "labels":
        labels = LabelTargets(cfg.targets.images or Path(cfg.targets.labels).parent / "images", cfg.targets.labels,
                              cfg.targets.capacity, teacher.num_classes)
    inverter = DiodeInverter(teacher, cfg, device)
    chunk_steps = [it * -(-cfg.batch_images // bs) for it, bs in
                   zip(cfg.run_iterations(), cfg.stages.batch_size)]  # steps per stage over all chunks
    steps_per_batch = sum(chunk_steps)
    bar = tqdm(total=len(todo) * steps_per_batch, unit="it", disable=not cfg.job.progress or rank != 0,
               desc=f"invert {len(todo)} batches", bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    work = [bs * r * r for bs, r in zip(cfg.stages.batch_size, cfg.stages.resolution)]
    progress = StageProgress(bar, [n * len(todo) for n in chunk_steps], work)
    try:
        for batch in todo:
            seed = derive_seed(cfg.job.seed, batch)
            start = time.perf_counter()
            result = inverter.invert(batch_targets(cfg, batch, labels, teacher.num_classes, device), seed,
                                     progress=progress.for_batch(batch))
            entry = {"batch": batch, "seed": seed, "config_hash": chash, "rank": rank,
                     "seconds": result.seconds, "wall": time.perf_counter() - start,
                     "iterations": chunk_steps,
                     "stage_losses": result.stage_losses}
            if result.failed:
                log.warning("fastdiode: batch %d failed: %s", batch, result.failed)
                append_jsonl(manifest, {**entry, "status": "failed", "reason": result.failed, "images": 0})
                continue
            if verifier is not None:
                entry["agreement"] = verify(inverter.teacher, verifier.to(device), result.images, result.targets,
                                            device)
                log.info("fastdiode: batch %d agreement with its targets: %s", batch, entry["agreement"])
            images, targets = result.images.cpu(), clip_to_image(result.targets.cpu())
            for i in range(len(images)):
                name = image_name(batch, i)
                atomic_write(out / "images" / f"{name}.png", lambda tmp, i=i: write_png(tmp, images[i]))
                write_yolo_labels(out / "labels" / f"{name}.txt", targets[i])
            if batch == 0:
                write_grid(out / "preview.png", images, targets, class_names)
            append_jsonl(manifest, {**entry, "status": "ok", "images": len(images)})
    finally:
        bar.close()
        inverter.close()
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return None
    return merge_outputs(cfg, out, class_names, world, record, inverter.execution)
