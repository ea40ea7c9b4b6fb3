"""The loss and mAP curves of a run as one PNG (matplotlib, imported lazily; skipped with a warning without it)."""
from __future__ import annotations

import logging
from pathlib import Path

from fastdiode.runtime.files import atomic_write

log = logging.getLogger("fastdiode")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_curves(history: list[dict], path: str | Path, title: str = "",
                metrics: tuple[str, ...] = ("mAP@.5", "mAP@[.5:.95]"), terms: tuple[str, ...] | list[str] = ()
                ) -> Path | None:
    """Plot the ``loss`` (and each of the logged ``terms`` that is not always 0) and the ``eval`` ``metrics`` of a
    metrics history."""
    plt = _pyplot()
    if plt is None:
        log.warning("fastdiode: matplotlib is not installed; no %s", path)
        return None
    train = [e for e in history if "loss" in e]
    evals = [e for e in history if "eval" in e]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("loss", *terms):
        if any(e.get(key) for e in train):
            ax_loss.plot([e["step"] for e in train], [e[key] for e in train], label=key)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss")
    ax_loss.legend()
    for key in metrics:
        ax_map.plot([e["step"] for e in evals], [e["eval"][key] for e in evals], marker="o", label=key)
    ax_map.set_xlabel("step")
    ax_map.set_ylim(0, 1)
    ax_map.set_title("validation " + ("mAP" if metrics[0].startswith("mAP") else ", ".join(metrics)))
    if evals:
        ax_map.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(path)


def plot_comparison(histories: dict[str, list[dict]], path: str | Path) -> Path | None:
    """Validation mAP@.5 and training loss of several runs (one line each) in one PNG."""
    plt = _pyplot()
    if plt is None:
        log.warning("fastdiode: matplotlib is not installed; no %s", path)
        return None
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, history in histories.items():
        train = [e for e in history if "loss" in e]
        evals = [e for e in history if "eval" in e]
        ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], label=name)
        ax_map.plot([e["step"] for e in evals], [e["eval"]["mAP@.5"] for e in evals], marker="o", label=name)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss")
    ax_map.set_xlabel("step")
    ax_map.set_ylim(0, 1)
    ax_map.set_title("validation mAP@.5")
    ax_map.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(path)
