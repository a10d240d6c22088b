"""Less padding vs random batches: the tinyworld recipe's language, MM PT and MM IT steps.

Both sides train the same models on the same data with the same batch size:

* baseline -- random batches (the default), each run in one pass padded to its longest sample;
* ours, ``grouping`` -- ``group_by_length`` (:func:`~training.batches.length_grouped_order`): batches
  cut from shuffled mega-batches sorted by length, so a batch's samples have similar lengths and pad little (other
  batches than the baseline's);
* ours, ``micro`` -- ``micro_batches`` (:func:`~training.batches.length_chunks`): the baseline's
  random batches, each run as micro-batches of similar length whose gradients add up to the batch's (4 for the
  text LM, 2 for PT and IT).

Workloads are the recipe's own, at its batch sizes, on the packaged ``tiny-world`` weights:

* ``text LM`` -- :func:`training.lm.train_text_lm` on :func:`tinyworld.language.text_dialogues`
  (batch 32), every weight of the packaged Llama training;
* ``MM PT`` / ``MM IT`` -- the :class:`~training.Trainer` on freshly rendered PT rows (batch 32) and
  IT conversations (batch 16), as the recipe's ``pt`` and ``it`` steps run them (IT with LoRA).

Each row reports the mean seconds per step after the first few (grouped batches differ in length from step to
step, so the mean, not the median, is what a run costs), as samples per second, and the share of real
(non-padding) tokens in the batches (``fill``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import mean

import torch

from benchmarks.common import Row
from core.hub import resolve_model
from orchestrator.backbone import Backbone
from tinyworld.data import write_datasets
from tinyworld.language import llm_config, text_dialogues
from training import TrainConfig, Trainer
from training.batches import epoch_order, length_chunks
from training.lm import dialogue_ids, train_text_lm


class _StepClock(list):
    """A ``losses`` list that also notes when each step's loss arrived (one ``append`` per step)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, value) -> None:
        self.times.append(time.perf_counter())
        super().append(value)

    def seconds_per_step(self, skip: int) -> float:
        return (self.times[-1] - self.times[skip]) / (len(self.times) - 1 - skip)


#: what each comparison changes on our side, per step of the recipe (the baseline passes nothing)
OURS = {
    "grouping": {
        "language": {"group_by_length": True},
        "pt": {"group_by_length": True},
        "it": {"group_by_length": True},
    },
    "micro": {"language": {"micro_batches": 4}, "pt": {"micro_batches": 2}, "it": {"micro_batches": 2}},
}


def _fill(lengths: list[int], order: list[int], batch: int, micro_batches: int = 1) -> float:
    """Real tokens over padded tokens in the full batches of ``order`` (each run as ``micro_batches`` passes)."""
    batches = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
    real = sum(lengths[i] for b in batches for i in b)
    passes = [c for b in batches for c in length_chunks(b, micro_batches, length=lengths.__getitem__)]
    return real / sum(len(c) * max(lengths[i] for i in c) for c in passes)


def _label(base: str, ours: dict) -> str:
    return f"{base}, {ours['micro_batches']} micro-batches)" if "micro_batches" in ours else f"{base})"


def bench_text_lm(
    *, steps: int = 20, batch_size: int = 32, dialogues: int = 2000, warmup: int = 3, ours: dict | None = None
) -> Row:
    config = llm_config(resolve_model("@tinyworld/llm"))
    data = text_dialogues(dialogues, seed=0)
    backbone = Backbone.from_config(config, placeholders={}, signals={}, device="cpu", dtype=torch.float32)
    lengths = [len(ids) for ids in dialogue_ids(backbone, data)]
    ours = OURS["grouping"]["language"] if ours is None else ours
    per_step, fills = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for side, options in (("baseline", {}), ("ours", ours)):
            clock = _StepClock()
            train_text_lm(
                config,
                data,
                Path(tmp) / side,
                steps=steps + warmup,
                batch_size=batch_size,
                progress=False,
                losses=clock,
                **options,
            )
            per_step[side] = clock.seconds_per_step(warmup)
            order = epoch_order(lengths, batch_size, 0, options.get("group_by_length", False))
            fills[side] = _fill(lengths, order, batch_size, options.get("micro_batches", 1))
    return Row(
        _label(f"text LM step, tinyworld LLM (batch {batch_size}", ours),
        "samples/s",
        batch_size / per_step["ours"],
        batch_size / per_step["baseline"],
        notes={"fill_ours": fills["ours"], "fill_baseline": fills["baseline"]},
    )


def bench_projector_stages(*, steps: int = 20, rows: int = 400, warmup: int = 3, ours: dict | None = None) -> list[Row]:
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_datasets(tmp / "data", pt=rows, it=rows, seed=0, progress=False)
        for stage, batch in (("pt", 32), ("it", 16)):
            per_step, fills = {}, {}
            mine = (OURS["grouping"] if ours is None else ours)[stage]
            for side, options in (("baseline", {}), ("ours", mine)):
                train = TrainConfig(
                    stage=stage,
                    max_steps=steps + warmup,
                    batch_size=batch,
                    lr=1e-3,
                    lora=stage == "it",
                    cache_dir=str(tmp / "cache"),
                    device="cpu",
                    progress=False,
                    **options,
                )
                trainer = Trainer("tiny-world", data[stage], tmp / f"{stage}-{side}", train=train, overwrite=True)
                result = trainer.run()
                per_step[side] = mean([batch / h["samples_per_s"] for h in result.history[warmup:]])
                lengths = [len(e.input_ids) for e in trainer.encoded]
                order = epoch_order(lengths, batch, train.seed, train.group_by_length)  # epoch 0
                fills[side] = _fill(lengths, order, batch, train.micro_batches)
            out.append(
                Row(
                    _label(f"MM {stage.upper()} step, tiny-world (batch {batch}", mine),
                    "samples/s",
                    batch / per_step["ours"],
                    batch / per_step["baseline"],
                    notes={"fill_ours": fills["ours"], "fill_baseline": fills["baseline"]},
                )
            )
    return out


def bench_grouping(*, steps: int = 40, mode: str = "grouping") -> list[Row]:
    """Samples per second of the recipe's text-LM, MM PT and MM IT steps, random batches against ``mode``
    (``grouping``: length-grouped batches; ``micro``: the same batches in micro-batches of similar length)."""
    ours = OURS[mode]
    return [bench_text_lm(steps=steps, ours=ours["language"]), *bench_projector_stages(steps=steps, ours=ours)]
