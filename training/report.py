"""What a training run tells: status lines and progress bars on stderr, ``train.json``, the per-step
``log.jsonl`` and its ``loss.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

TRAIN_FILE = "train.json"
LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"


def status(text: str) -> None:
    """A status line on stderr that does not break a running progress bar."""
    tqdm.write(text, file=sys.stderr)


def progress_bar(total: int, initial: int, desc: str, *, enabled: bool) -> tqdm:
    """The bar of a training loop: steps done of ``total``, starting at ``initial`` (a resumed run)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
        disable=not enabled,
    )


def quiet_libraries() -> None:
    """Silence transformers' and diffusers' model-loading bars and warnings (library chatter that would drown a
    conversation or a training log)."""
    import diffusers  # noqa: PLC0415 - heavy; only once a command runs (not on import or --help)
    import transformers  # noqa: PLC0415 - heavy; only once a command runs (not on import or --help)

    for lib in (transformers, diffusers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def write_settings(out: Path, settings: dict[str, Any]) -> Path:
    """``out / TRAIN_FILE``: the run's settings, data files and counts, as JSON."""
    path = out / TRAIN_FILE
    path.write_text(json.dumps(settings, indent=2))
    return path


class StepLog:
    """``log.jsonl``, appended to: one JSON object per step, flushed as it is written. ``StepLog(None)`` (a
    process other than the main one) writes nothing."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = open(path, "a") if path is not None else None

    def write(self, logs: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(logs) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def plot_losses(log: Path, png: Path, *, title: str = "training loss") -> Path | None:
    """Draw the LM and alignment losses of a ``log.jsonl`` (one line per step) into a PNG."""
    import matplotlib  # noqa: PLC0415 - heavy; only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after selecting the headless Agg backend

    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    if not rows:
        return None
    keys = ["loss", "lm_loss"] + sorted({k for r in rows for k in r if k.startswith(("align/", "diffusion/"))})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key, linewidth=1.8 if key == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


__all__ = [
    "TRAIN_FILE",
    "LOG_FILE",
    "PLOT_FILE",
    "status",
    "progress_bar",
    "quiet_libraries",
    "write_settings",
    "StepLog",
    "plot_losses",
]
