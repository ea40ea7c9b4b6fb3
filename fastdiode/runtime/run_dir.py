"""A training run's folder, shared by the trainers: created with its config and never overwritten by a new run;
the cadence rule of its logs, evaluations and checkpoints; and the state saved when Ctrl-C stops it."""
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
