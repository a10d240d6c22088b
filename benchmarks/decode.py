"""Decoding: Hugging Face ``generate`` on LLaVA vs mmgraph's signal-aware decoding loop, batch 1, greedy.

Both sides get the same prompt (``[bos]``, the image, ``text_tokens`` text tokens) and produce exactly ``tokens``
new tokens (``min_new_tokens`` on both, so an early EOS of random weights cannot shorten one side):

* time to first token -- a run with one new token: vision tower, projector, prefill, first token;
* decode tokens/s -- ``(tokens - 1) / (t(tokens) - t(1))``: the steady per-token rate after the prefill.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import Row, race_decoding
from benchmarks.twins import Twins, build_twins, make_batch
from orchestrator.decoding import resolve


def hf_generate(twins: Twins, batch, tokens: int) -> torch.Tensor:
    out = twins.hf.generate(
        input_ids=batch.hf_ids,
        pixel_values=batch.pixel_values,
        attention_mask=batch.attention_mask,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=0,
    )
    return out[0, batch.hf_ids.shape[1] :]


def our_generate(twins: Twins, batch, tokens: int, cache: str = "auto") -> list[int]:
    system = twins.ours
    with torch.no_grad():
        features = system.encoder("image")(pixel_values=batch.pixel_values)  # (B, 1, T, D_enc)
        with system.inputs(batch.our_ids, {"image": features}) as embeds:  # the composite forward's project + fuse
            result = system.backbone.generate(embeds, max_new_tokens=tokens, min_new_tokens=tokens, cache=cache)
    return [i for segment in result.segments for i in segment.token_ids]


def same_tokens(
    twins: Twins, *, tokens: int = 16, text_tokens: int | None = None, cache: str = "auto"
) -> dict[str, Any]:
    """Greedy tokens of both sides on one prompt (they must be equal)."""
    batch = make_batch(twins, 1, text_tokens=text_tokens)
    with torch.no_grad():
        theirs = hf_generate(twins, batch, tokens).tolist()
    ours = our_generate(twins, batch, tokens, cache)
    return {"hf": theirs, "ours": ours}


def bench_decode(
    size: str = "tiny",
    *,
    tokens: int = 32,
    text_tokens: int | None = None,
    repeats: int = 3,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    twins: Twins | None = None,
    cache: str = "auto",
) -> list[Row]:
    """``cache``: ours decodes with a dynamic cache, a static one, static with CUDA-graph steps, or those steps
    compiled first (:mod:`orchestrator.decoding`; ``auto``: graphs on CUDA)."""
    twins = twins or build_twins(size, device=device, dtype=dtype)
    dev = twins.device
    batch = make_batch(twins, 1, text_tokens=text_tokens)
    sides = (("hf", lambda n: hf_generate(twins, batch, n)), ("ours", lambda n: our_generate(twins, batch, n, cache)))
    results = race_decoding(sides, tokens, dev, repeats=repeats)
    notes = {
        "size": size,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "tokens": tokens,
        "cache": resolve(cache, dev),
        "weights": "random",
        "prompt": f"1 image ({twins.num_image_tokens} tokens) + "
        f"{batch.hf_ids.shape[1] - 1 - twins.num_image_tokens} text tokens",
    }
    which = f"{size}, cache {notes['cache']}"
    rows = [
        Row(f"decode, batch 1 ({which})", "tokens/s", results["ours"]["rate"], results["hf"]["rate"], notes=notes),
        Row(
            f"time to first token ({which})",
            "ms",
            1e3 * results["ours"]["ttft"],
            1e3 * results["hf"]["ttft"],
            higher_is_better=False,
            notes=notes,
        ),
    ]
    if results["hf"]["peak_gib"] is not None:
        rows.append(
            Row(
                f"decode peak memory ({size})",
                "GiB",
                results["ours"]["peak_gib"],
                results["hf"]["peak_gib"],
                higher_is_better=False,
                notes=notes,
            )
        )
    return rows
