"""Crash-safe files: whole files written to a temporary file beside the target and renamed over it; JSON-lines
logs appended one line at a time and read back without a torn last line."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename: readers see the old file or the
    complete new one, never a partial one, even if the process dies midway."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes the file private (0600); the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cached_json(path: str | Path, make: Callable[[], dict]) -> dict:
    """The JSON object in ``path``, or ``make()`` written there atomically: work already done is reused."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1)))
    return value


def append_jsonl(path: str | Path, entry: dict) -> None:
    """Append ``entry`` as one JSON line (flushed): a crash leaves at most a torn last line."""
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    """The entries of a JSON-lines file (none when it does not exist); a torn line (a crash mid-append) is
    skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries
