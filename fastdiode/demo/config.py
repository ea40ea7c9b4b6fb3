"""The digits benchmark's config: the data, the teacher, one DIODE inversion config, one distillation
config shared by every row (same student, steps and schedule), and the rows (training sources) to compare.
``fastdiode demo`` runs the packaged ``demo_digits.yaml``; configs/bench_digits.yaml is the full benchmark."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastdiode.config import ConfigError, apply_override, from_dict, to_dict
from fastdiode.data.digits import DigitsSpec
from fastdiode.distill.config import TrainConfig
from fastdiode.inversion.config import InversionConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "assets" / "demo_digits.yaml"
SHIPPED_TEACHER = Path(__file__).resolve().parent.parent / "assets" / "teacher_digits.safetensors"
SOURCES = ("diode", "real", "photos", "noise")


@dataclass
class Row:
    name: str
    source: str  # diode | real | photos | noise
    fp: bool = True  # diode rows: Y_fp false-positive sampling on or off
    images: int = 0  # diode rows: images to synthesize; others: 0 = the whole set
    inversion: list[str] = field(default_factory=list)  # diode rows: key=value overrides of the inversion section
    distill: list[str] = field(default_factory=list)  # key=value overrides of the distill section for this row
    seeds: list[int] = field(default_factory=list)  # train.seed of each run (mean ± std); empty: the section's seed
    baseline: str | None = None  # another row: the paired difference over the seeds both ran, with a 95% interval
    eval_on: str = "val"  # val, or holdout (the split held out from the train set, for choosing settings)


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    teacher: str | None = None  # a fastdiode checkpoint; None: the shipped digits teacher
    data: DigitsSpec = field(default_factory=DigitsSpec)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    distill: TrainConfig = field(default_factory=TrainConfig)
    rows: list[Row] = field(default_factory=list)

    def validate(self) -> None:
        if not self.rows:
            raise ConfigError("rows: expected at least one row (name, source)")
        for i, row in enumerate(self.rows):
            if row.source not in SOURCES:
                raise ConfigError(f"rows[{i}].source: {row.source!r} is not one of {', '.join(SOURCES)}")
            if row.source == "diode" and row.images < 1:
                raise ConfigError(f"rows[{i}].images: a diode row needs the number of images to synthesize")
            if row.inversion and row.source != "diode":
                raise ConfigError(f"rows[{i}].inversion: overrides apply to diode rows only")
            try:
                inversion = row_inversion(self.inversion, row)
            except ConfigError as e:
                raise ConfigError(f"rows[{i}].inversion: {e}") from None
            try:
                distill = row_distill(self.distill, row)
            except ConfigError as e:
                raise ConfigError(f"rows[{i}].distill: {e}") from None
            if row.source == "diode" and distill.data.capacity < inversion.targets.capacity:
                raise ConfigError(f"rows[{i}]: distill.data.capacity {distill.data.capacity} is below "
                                  f"inversion.targets.capacity {inversion.targets.capacity} (the boxes a synthesized "
                                  "image may carry); raise distill.data.capacity")
            if len(set(row.seeds)) != len(row.seeds):
                raise ConfigError(f"rows[{i}].seeds: {row.seeds} repeats a seed")
            if row.eval_on not in ("val", "holdout"):
                raise ConfigError(f"rows[{i}].eval_on: {row.eval_on!r} is not one of val, holdout")
            if row.eval_on == "holdout" and not self.data.holdout:
                raise ConfigError(f"rows[{i}].eval_on: holdout needs data.holdout images (the split held out from "
                                  "the train set)")
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ConfigError(f"rows: names must be unique, got {names}")
        for i, row in enumerate(self.rows):
            if row.baseline is not None and row.baseline not in names:
                raise ConfigError(f"rows[{i}].baseline: {row.baseline!r} is not a row (rows: {', '.join(names)})")
        try:
            self.inversion.validate()
        except ConfigError as e:
            raise ConfigError(f"inversion.{e}") from None

    def selected_rows(self, names: list[str] | None) -> list[Row]:
        """The rows named in ``names`` (all rows when None) and the baselines they compare with, in config
        order: a subset of a benchmark reruns or finishes just those rows and still gets its paired differences."""
        if names is None:
            return list(self.rows)
        known = {r.name: r for r in self.rows}
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ConfigError(f"--rows: {', '.join(unknown) or 'nothing'} is not a row of this config "
                              f"(rows: {', '.join(known)})")
        wanted = set(names) | {known[n].baseline for n in names if known[n].baseline is not None}
        return [r for r in self.rows if r.name in wanted]


def row_inversion(base: InversionConfig, row: Row) -> InversionConfig:
    """The inversion config of a diode row: ``base`` with the row's Y_fp switch and overrides applied."""
    data = to_dict(base)
    data["fp"]["enabled"] = row.fp
    for assignment in row.inversion:
        apply_override(data, assignment, InversionConfig)
    cfg = from_dict(InversionConfig, data)
    cfg.validate()
    return cfg


def row_distill(base: TrainConfig, row: Row, seed: int | None = None) -> TrainConfig:
    """The distillation config of a row: ``base`` with the row's overrides (and ``train.seed``) applied."""
    data = to_dict(base)
    for assignment in row.distill:
        apply_override(data, assignment, TrainConfig)
    if seed is not None:
        data["train"]["seed"] = seed
    return from_dict(TrainConfig, data)
