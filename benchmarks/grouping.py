"""Length-grouped batches vs random batches: the tinyworld recipe's language, MM PT and MM IT steps.

Both sides train the same models on the same data with the same batch size; only the order differs:

* baseline -- random batches (the default): each batch is padded to its longest sample;
* ours -- ``group_by_length`` (:func:`~orchestrator.training.batches.length_grouped_order`): batches cut from
  shuffled mega-batches sorted by length, so a batch's samples have similar lengths and pad little.

Workloads are the recipe's own, at its batch sizes, on the packaged ``tiny-world`` weights:

* ``text LM`` -- :func:`orchestrator.training.lm.train_text_lm` on :func:`tinyworld.language.text_dialogues`
  (batch 32), every weight of the 1.1 M-parameter Llama training;
* ``MM PT`` / ``MM IT`` -- the :class:`~orchestrator.training.Trainer` on freshly rendered PT rows (batch 32) and
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

from benchmarks.common import Row


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


def _fill(lengths: list[int], order: list[int], batch: int) -> float:
    batches = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    real = sum(lengths[i] for b in batches for i in b)
    return real / sum(batch * max(lengths[i] for i in b) for b in batches)


def bench_text_lm(*, steps: int = 20, batch_size: int = 32, dialogues: int = 2000, warmup: int = 3) -> Row:
    import torch

    from orchestrator.backbone import Backbone
    from orchestrator.tiny import resolve_model
    from orchestrator.training.batches import epoch_order
    from orchestrator.training.lm import dialogue_ids, train_text_lm
    from tinyworld.language import llm_config, text_dialogues

    config = llm_config(resolve_model("@tinyworld/llm"))
    data = text_dialogues(dialogues, seed=0)
    backbone = Backbone.from_config(config, placeholders={}, signals={}, device="cpu", dtype=torch.float32)
    lengths = [len(ids) for ids in dialogue_ids(backbone, data)]
    per_step = {}
    with tempfile.TemporaryDirectory() as tmp:
        for grouped in (False, True):
            clock = _StepClock()
            train_text_lm(config, data, Path(tmp) / str(grouped), steps=steps + warmup, batch_size=batch_size,
                          progress=False, losses=clock, group_by_length=grouped)
            per_step[grouped] = clock.seconds_per_step(warmup)
    fills = {grouped: _fill(lengths, epoch_order(lengths, batch_size, 0, grouped), batch_size)
             for grouped in (False, True)}
    return Row(f"text LM step, tinyworld LLM (batch {batch_size})", "samples/s", batch_size / per_step[True],
               batch_size / per_step[False], notes={"fill_ours": fills[True], "fill_baseline": fills[False]})


def bench_projector_stages(*, steps: int = 20, rows: int = 400, warmup: int = 3) -> list[Row]:
    from orchestrator.training import TrainConfig, Trainer
    from orchestrator.training.batches import epoch_order
    from tinyworld.data import write_datasets

    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_datasets(tmp / "data", pt=rows, it=rows, seed=0, progress=False)
        for stage, batch in (("pt", 32), ("it", 16)):
            per_step, fills = {}, {}
            for grouped in (False, True):
                train = TrainConfig(stage=stage, max_steps=steps + warmup, batch_size=batch, lr=1e-3,
                                    lora=stage == "it", cache_dir=str(tmp / "cache"), device="cpu", progress=False,
                                    group_by_length=grouped)
                trainer = Trainer("tiny-world", data[stage], tmp / f"{stage}-{grouped}",
                                  train=train, overwrite=True)
                result = trainer.run()
                per_step[grouped] = mean([batch / h["samples_per_s"] for h in result.history[warmup:]])
                lengths = [len(e.input_ids) for e in trainer.encoded]
                fills[grouped] = _fill(lengths, epoch_order(lengths, batch, train.seed, grouped), batch)  # epoch 0
            out.append(Row(f"MM {stage.upper()} step, tiny-world (batch {batch})", "samples/s",
                           batch / per_step[True], batch / per_step[False],
                           notes={"fill_ours": fills[True], "fill_baseline": fills[False]}))
    return out


def bench_grouping(*, steps: int = 40) -> list[Row]:
    """Samples per second of the recipe's text-LM, MM PT and MM IT steps, length-grouped vs random batches."""
    return [bench_text_lm(steps=steps), *bench_projector_stages(steps=steps)]
