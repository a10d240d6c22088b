"""Orchestration overhead: an image-in / image-out turn through the Assistant vs the sum of its model calls.

The turn runs the whole LangGraph (ingest, encode, reason, generate_image, merge) with its SQLite checkpointer and
artifact store. The model calls are timed inside the same turn by wrapping the system's methods: media decoding,
the frozen encoder, the input projector, the prompt embedding, the LLM's decoding loop, and the image generator
(output projector + diffusion pipeline). Overhead = turn time - model time: graph scheduling, state
checkpoints, prompt building, artifact storage.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import Row, median
from orchestrator.assistant import Assistant
from tinyworld.world import Picture, encode


@contextmanager
def _timing(obj: Any, names: list[str], spent: list[float]) -> Iterator[None]:
    """Wrap ``obj.<name>`` for each name so that every call adds its seconds to ``spent``."""
    originals = {name: getattr(obj, name) for name in names}

    def wrap(fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        return timed

    for name, fn in originals.items():
        setattr(obj, name, wrap(fn))
    try:
        yield
    finally:
        for name in originals:
            delattr(obj, name)  # the instance attribute goes; the class method shows through again


def bench_graph(config: str = "tiny-world", *, repeats: int = 5, assistant=None) -> list[Row]:
    image = encode(Picture(colour="red", shape="circle", position="centre", size="large"), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        bot = assistant or Assistant(config, db=Path(tmp) / "t.sqlite", artifacts=Path(tmp) / "a")
        system = bot.system
        turns, models = [], []
        for i in range(repeats + 1):
            spent: list[float] = []
            with (
                _timing(system, ["decode", "encode", "project", "generate"], spent),
                _timing(system.backbone, ["embed", "generate"], spent),
            ):
                start = time.perf_counter()
                reply = bot.chat(
                    "What colour is this? Then draw it.", images=[image], generate=["image"], allow=["image"], seed=i
                )
                total = time.perf_counter() - start
            if [a.modality for a in reply.artifacts] != ["image"]:
                raise RuntimeError(f"the benchmark turn generated {[a.modality for a in reply.artifacts]}")
            if i:  # the first turn warms caches up
                turns.append(total)
                models.append(sum(spent))
        if assistant is None:
            bot.close()
    turn, model = median(turns), median(models)
    notes = {
        "config": config,
        "overhead_ms": 1e3 * (turn - model),
        "overhead_pct": 100 * (turn - model) / turn,
        "repeats": repeats,
    }
    return [
        Row(
            "image in + image out turn vs its model calls (graph overhead)",
            "ms",
            1e3 * turn,
            1e3 * model,
            higher_is_better=False,
            notes=notes,
        )
    ]
