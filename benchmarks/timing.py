"""Timing hygiene shared by the CPU benchmarks: refuse to time on a busy machine, alternate the sides round by round,
report the median with the interquartile range, and record where and from what every result came."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def require_quiet(check: bool = True) -> None:
    """Exit with status 2 and a clear message while the 1-minute load average exceeds the core count: timings
    taken beside other work say little (``check=False``: smoke runs)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if check and load > cores:
        print(f"benchmark: refusing to time: the 1-minute load average is {load:.2f} on {cores} cores (other work is "
              "running); wait until the machine is quiet", file=sys.stderr)
        sys.exit(2)


def provenance() -> dict:
    """The commit (and whether the tree is dirty), the machine, the load and the library versions."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain")),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{torch.get_num_threads()} threads",
            "load_1min": os.getloadavg()[0], "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}


def first_calls(sides: dict[str, Callable[[], object]], warmup: int = 2) -> dict[str, float]:
    """Run each side ``warmup`` times (compilation, allocation); returns each side's first-call seconds."""
    first = {}
    for name, fn in sides.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
        for _ in range(warmup - 1):
            fn()
    return first


def interleaved(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of one call of each side in every round, the sides taking turns round by round, so that a slow
    spell of a shared machine hits every side alike."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def spread(seconds: list[float]) -> dict:
    """Median and interquartile range, in milliseconds."""
    q1, median, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    return {"median ms": 1e3 * median, "q1 ms": 1e3 * q1, "q3 ms": 1e3 * q3}


def ratio_spread(base: list[float], fast: list[float]) -> dict:
    """The speed-up base / fast: the ratio of medians, and the interquartile range of the per-round ratios."""
    per_round = [b / f for b, f in zip(base, fast)]
    q1, _, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
    return {"speed-up": statistics.median(base) / statistics.median(fast), "per-round q1": q1, "per-round q3": q3}
