"""Thread grants of recipe workers: the parallel recipe run (:mod:`tinyworld.runner`) hands the cores of finished
steps to the steps still running by writing each running step's thread count to a file, and long training loops
take the new count up now and then (:func:`refresh_threads`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: environment variable naming the file in which the scheduler grants a running step more threads
THREADS_FILE = "TINYWORLD_THREADS_FILE"


def refresh_threads() -> None:
    """In a recipe worker, take up the thread count last granted to this step (the scheduler hands the cores of
    finished steps to the ones still running). Long training loops call it now and then; elsewhere it does
    nothing."""
    path = os.environ.get(THREADS_FILE)
    if not path:
        return
    try:
        granted = int(Path(path).read_text())
    except (OSError, ValueError):
        return
    if granted > 0 and granted != torch.get_num_threads():
        torch.set_num_threads(granted)
