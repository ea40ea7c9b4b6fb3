"""A bar chart of TIDE's error breakdowns of several runs side by side (as DICOD's Figure S1)."""
from __future__ import annotations

import logging
from pathlib import Path

from fastdiode.eval.coco import TIDE_MAIN, TIDE_SPECIAL
from fastdiode.runtime.files import atomic_write

log = logging.getLogger("fastdiode")


def mean_tide(breakdowns: list[dict | None]) -> dict | None:
    """The mean over runs of TIDE breakdowns ({'main': {...}, 'special': {...}}); None when none has one."""
    runs = [b for b in breakdowns if b]
    if not runs:
        return None
    return {kind: {k: sum(r[kind][k] for r in runs) / len(runs) for k in keys}
            for kind, keys in (("main", TIDE_MAIN), ("special", TIDE_SPECIAL))}


def plot_tide(runs: dict[str, dict], path: str | Path, title: str = "TIDE errors") -> Path | None:
    """Grouped bars of dAP per error type (Cls, Loc, Both, Dupe, Bkg, Miss | FalsePos, FalseNeg), one bar per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("fastdiode: matplotlib is not installed; no %s", path)
        return None
    kinds = [*(("main", k) for k in TIDE_MAIN), *(("special", k) for k in TIDE_SPECIAL)]
    names = list(runs)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(kinds) + 0.25 * len(names) * len(kinds)), 3.8))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(kinds))]
        ax.bar(xs, [runs[name][kind][key] for kind, key in kinds], width, label=name)
    ax.axvline(len(TIDE_MAIN) - 0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(kinds)), [key for _, key in kinds])
    ax.set_ylabel("dAP@0.5 (points)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(path)
