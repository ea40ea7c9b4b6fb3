"""A training run's folder, shared by the trainers: created with its config, never overwritten by a new run,
and its metrics file rewritten from the resumed state (lines written after the last checkpoint are dropped)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastdiode.runtime.files import atomic_write

STATE = "state.pt"
log = logging.getLogger("fastdiode")


def prepare_run_dir(out: str | Path, config: dict, resume: bool, rank: int = 0, key: str = "train.out") -> Path:
    """Create ``out`` and write ``config.json``; refuse to overwrite an earlier run's state unless resuming."""
    out = Path(out)
    if (out / STATE).exists() and not resume:
        raise ValueError(f"{key}: {out} already holds a run ({STATE}); pass --resume to continue it or "
                         f"choose another {key}")
    if resume and not (out / STATE).exists():
        raise ValueError(f"--resume: {out / STATE}: no such file (nothing to resume)")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    return out


def rewrite_metrics(path: Path, history: list[dict], rank: int = 0) -> None:
    """metrics.jsonl = the history the state holds: a resumed run drops lines written after its checkpoint."""
    if rank == 0:
        atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(e) + "\n" for e in history)))


def append_metrics(path: Path, entry: dict, rank: int = 0) -> None:
    if rank == 0:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def due(step: int, every: int, stop: int) -> bool:
    """True at every ``every``-th step and at the last one (``every`` 0: only the last)."""
    return (every > 0 and step % every == 0) or step == stop


@contextmanager
def saved_on_interrupt(save_state: Callable[[], None], step: Callable[[], int]) -> Iterator[None]:
    """Ctrl-C inside the block saves the run's state at the current step, then re-raises (rerun with --resume)."""
    try:
        yield
    except KeyboardInterrupt:
        log.warning("fastdiode: interrupted at step %d; saving the state (rerun with --resume)", step())
        save_state()
        raise
