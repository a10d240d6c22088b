"""MM PT training throughput: Hugging Face LLaVA vs mmgraph's trainer objective, projector-only, same batch.

Both sides train the same projector (shared modules) with AdamW on the same :func:`~benchmarks.twins.make_batch`:

* baseline -- ``LlavaForConditionalGeneration(input_ids, pixel_values, labels=...)``, ``loss.backward()``, the
  vision tower and LLM frozen, as a user of transformers would run LLaVA's pre-training stage;
* ours -- :class:`~training.objective.ProjectorObjective` (the loss mmgraph's Trainer computes) on a
  :class:`~training.batches.Batch`. ``encoder="live"`` runs the frozen CLIP every step as the
  baseline does; ``encoder="cached"`` reads precomputed features, as the Trainer does from its feature cache.
  ``compile=True`` runs the frozen LLM through ``torch.compile`` (``TrainConfig(compile=True)``).

``compile_baseline=True`` also compiles the baseline's language model (``torch.compile`` on LLaVA's
``language_model``), to show what the same compiler gives a transformers user; the default baseline is LLaVA as
transformers runs it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from benchmarks.common import Row, median, peak_memory, sync, timed
from benchmarks.twins import TwinBatch, Twins, build_twins, make_batch
from training import ProjectorObjective
from training.batches import Batch


def our_batch(twins: Twins, batch: TwinBatch, features: torch.Tensor | None = None):
    if features is None:
        with torch.no_grad():
            features = twins.ours.encoder("image")(pixel_values=batch.pixel_values)  # (B, 1, N, D_enc)
    return Batch(batch.our_ids, batch.attention_mask, batch.labels, {"image": features}, {}, {})


def losses(twins: Twins, batch: TwinBatch) -> dict[str, Any]:
    """The two sides' LM loss and logits on one batch (no training): they must agree."""
    with torch.no_grad():
        hf = twins.hf(
            input_ids=batch.hf_ids,
            pixel_values=batch.pixel_values,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
        )
        ours, _ = ProjectorObjective(twins.ours)(our_batch(twins, batch))
        system = twins.ours
        features = system.encoder("image")(pixel_values=batch.pixel_values)  # (B, 1, T, D_enc)
        out, _ = system(batch.our_ids, {"image": features}, attention_mask=batch.attention_mask)
        logits = out.logits
    vocab = hf.logits.shape[-1]
    return {
        "hf_loss": hf.loss.item(),
        "our_loss": ours.item(),
        "max_logit_diff": (hf.logits.float() - logits[..., :vocab].float()).abs().max().item(),
    }


def bench_train(
    size: str = "tiny",
    *,
    batch_size: int = 4,
    steps: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    encoder: Literal["live", "cached"] = "live",
    twins: Twins | None = None,
    compile: bool = False,
    compile_baseline: bool = False,
) -> list[Row]:
    """Samples per second (and peak memory) of one projector-only PT step, baseline vs ours."""
    twins = twins or build_twins(size, device=device, dtype=dtype)
    dev = twins.device
    batch = make_batch(twins, batch_size)
    params = list(twins.hf.model.multi_modal_projector.parameters())
    hf_opt = torch.optim.AdamW(params, lr=1e-5)
    our_opt = torch.optim.AdamW(list(twins.ours.input_projectors.parameters()), lr=1e-5)
    objective = ProjectorObjective(twins.ours, compile_llm=compile)
    hf_model = twins.hf.model
    language_model = hf_model.language_model
    cached = None
    if encoder == "cached":
        with torch.no_grad():
            cached = twins.ours.encoder("image")(pixel_values=batch.pixel_values)

    def hf_step() -> None:
        out = twins.hf(
            input_ids=batch.hf_ids,
            pixel_values=batch.pixel_values,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
        )
        out.loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    def our_step() -> None:
        total, _ = objective(our_batch(twins, batch, cached))
        total.backward()
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)

    memory: dict[str, dict] = {"hf": {}, "ours": {}}
    if compile_baseline:  # a wrapper in LLaVA's slot: the shared module itself stays uncompiled for our side
        hf_model.language_model = torch.compile(language_model)
    try:
        with peak_memory(dev, memory["hf"]):
            hf_times = timed(hf_step, dev, warmup=warmup, repeats=steps)
    finally:
        hf_model.language_model = language_model
    with peak_memory(dev, memory["ours"]):
        our_times = timed(our_step, dev, warmup=warmup, repeats=steps)
    sync(dev)
    notes = {
        "size": size,
        "batch": batch_size,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "encoder": encoder,
        "compile": compile,
        "compile_baseline": compile_baseline,
        "weights": "random",
    }
    which = ", ".join([f"encoder {encoder}"] + ["compiled"] * compile + ["baseline compiled"] * compile_baseline)
    rows = [
        Row(
            f"PT step, projector only ({size}, batch {batch_size}, {which})",
            "samples/s",
            batch_size / median(our_times),
            batch_size / median(hf_times),
            notes=notes,
        )
    ]
    if memory["hf"]["peak_gib"] is not None:
        rows.append(
            Row(
                f"PT step peak memory ({size}, batch {batch_size})",
                "GiB",
                memory["ours"]["peak_gib"],
                memory["hf"]["peak_gib"],
                higher_is_better=False,
                notes=notes,
            )
        )
    return rows
