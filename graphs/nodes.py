"""The nodes of the any-to-any graph: ingest -> encode (Send per item) -> reason -> generate_<name> (Send per
signal group) -> merge. Every node reads models from ``runtime.context`` (a :class:`RunContext`) and returns a
partial state update made of plain data.
"""

from __future__ import annotations

import uuid
from typing import Any

import torch
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send

from core.errors import UnsupportedModalityError
from graphs.context import RunContext
from graphs.state import State
from orchestrator.backbone import Media, Signal, Text, PromptTurn


def _emit(event: dict) -> None:
    """Send a custom stream event (tokens, progress); a no-op when the graph is not being streamed."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a runnable context (e.g. a node function used directly in a test)
        return
    writer(event)


def _media_parts(turns: list[dict]) -> list[dict]:
    return [p for t in turns for p in t["parts"] if p["type"] == "media" and "generator" not in p]


def _feature_key(ctx: RunContext, ref: dict) -> str:
    return f"{ref['artifact']['id']}:{ctx.system.encoder_key(ref['artifact']['modality'])}"


# -- ingest ---------------------------------------------------------------------------------------------------------


def ingest(state: State, runtime: Runtime[RunContext]) -> dict:
    """Validate the turn before any model runs: known modalities and generators, media decodable within limits."""
    system = runtime.context.system
    for name in list(state.get("generate") or []) + list(state.get("allow") or []):
        if name not in system.generator_names:
            raise UnsupportedModalityError(
                f"unknown generator {name!r}; this system has: {', '.join(system.generator_names) or 'none'}"
            )
    for part in state["inputs"]:
        if part["type"] == "media":
            ref = part["artifact"]
            if ref["modality"] not in system.modality_names:
                raise UnsupportedModalityError(
                    f"this system takes no {ref['modality']} input; it takes: {', '.join(system.modality_names) or 'text'}"
                )
            runtime.context.system.decode_cached(ref["modality"], ref["id"], runtime.context.store)
        elif part["type"] != "text":
            raise ValueError(f"unknown input part type {part['type']!r}")
    return {"generated": Overwrite([]), "signals": [], "draft": [], "reply": [], "finish_reason": ""}


def route_inputs(state: State, runtime: Runtime[RunContext]) -> list[Send] | str:
    """One ``encode`` task per media item (this turn's and earlier turns') whose features are not cached."""
    ctx = runtime.context
    sends, seen = [], set()
    for part in _media_parts(state.get("history", []) + [{"parts": state["inputs"]}]):
        key = _feature_key(ctx, part)
        if key not in ctx.features and key not in seen:
            seen.add(key)
            sends.append(Send("encode", {"item": part}))
    return sends or "reason"


# -- encode ---------------------------------------------------------------------------------------------------------


def encode(payload: dict, runtime: Runtime[RunContext]) -> dict:
    """Run one item through its frozen encoder; the features stay in the context cache, state gets the key."""
    ctx = runtime.context
    ref = payload["item"]["artifact"]
    media = ctx.system.decode_cached(ref["modality"], ref["id"], ctx.store)
    feats = ctx.system.encode(ref["modality"], [media])  # (1, G, T, D_enc)
    key = _feature_key(ctx, payload["item"])
    ctx.features.put(key, feats)
    _emit({"type": "encoded", "modality": ref["modality"], "artifact": ref["id"]})
    return {"features": {ref["id"]: key}}


# -- reason ---------------------------------------------------------------------------------------------------------


def _turns(system, conversation: list[dict]) -> list[PromptTurn]:
    turns = []
    for turn in conversation:
        segments = []
        for part in turn["parts"]:
            if part["type"] == "text":
                segments.append(Text(part["text"]))
            elif "generator" in part:
                segments.append(Signal(part["generator"]))
            else:
                segments.append(Media(part["artifact"]["modality"], system.slots(part["artifact"]["modality"])))
        turns.append(PromptTurn(turn["role"], segments))
    return turns


def reason(state: State, runtime: Runtime[RunContext]) -> dict:
    """Splice projected features into the prompt, run the LLM, and turn its signal groups into tool calls."""
    ctx = runtime.context
    system = ctx.system
    params = state.get("params") or {}
    conversation = state.get("history", []) + [{"role": "user", "parts": state["inputs"]}]

    # 1. Project every media item's cached features, in order of appearance per modality.
    per_modality: dict[str, list[torch.Tensor]] = {}
    for part in _media_parts(conversation):
        modality = part["artifact"]["modality"]
        feats = ctx.features.get(_feature_key(ctx, part))
        if feats is None:  # evicted between encode and reason: recompute
            feats = system.encode(modality, [system.decode_cached(modality, part["artifact"]["id"], ctx.store)])
        per_modality.setdefault(modality, []).append(feats)
    features = {}
    with torch.no_grad():
        for modality, items in per_modality.items():
            projected = system.project(modality, torch.cat(items))  # (N_items, S, D_llm)
            features[modality] = projected.reshape(-1, projected.shape[-1])  # (N_items * S, D_llm)

    # 2. Build the prompt, splice, generate.
    backbone = system.backbone
    prompt = backbone.build_prompt(_turns(system, conversation))
    input_ids = torch.tensor([prompt.input_ids], device=backbone.device)
    with torch.no_grad():
        embeds = backbone.embed(input_ids, features)
    result = backbone.generate(
        embeds,
        max_new_tokens=params.get("max_new_tokens", system.config.llm.max_new_tokens),
        temperature=params.get("temperature", system.config.llm.temperature),
        top_p=params.get("top_p", 1.0),
        seed=params.get("seed"),
        require=state.get("generate") or [],
        allow=state.get("allow"),
        on_text=lambda text: _emit({"type": "token", "text": text}),
        cancel=ctx.cancel,
        cache=system.config.llm.decoding,
    )

    # 3. Signal groups become tool calls; their hidden states wait in the run-scoped scratch cache.
    draft, signals = [], []
    for segment in result.segments:
        if hasattr(segment, "hidden"):
            key = f"signal:{uuid.uuid4().hex}"
            ctx.scratch.put(key, segment)
            signals.append({"index": len(draft), "generator": segment.generator, "key": key})
            draft.append({"type": "signal", "generator": segment.generator, "index": len(draft)})
        elif segment.text:
            draft.append({"type": "text", "text": segment.text})
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}
    return {"draft": draft, "signals": signals, "finish_reason": result.finish_reason, "usage": usage}


def route_signals(state: State) -> list[Send] | str:
    """One generator task per signal group (parallel), or straight to merge."""
    if not state.get("signals"):
        return "merge"
    params = state.get("params") or {}
    return [Send(f"generate_{s['generator']}", {"signal": s, "params": params}) for s in state["signals"]]


# -- generate -------------------------------------------------------------------------------------------------------


def make_generate_node(name: str):
    """A node that calls generator ``name``: output projector -> diffusion pipeline -> artifact."""

    def generate(payload: dict, runtime: Runtime[RunContext]) -> dict:
        ctx = runtime.context
        signal, params = payload["signal"], payload["params"]
        group = ctx.scratch.get(signal["key"])
        if group is None:
            raise RuntimeError(
                f"signal states for {name} were lost (key {signal['key']}): they live in the memory "
                "of the process that ran the LLM, so a paused turn resumes only there"
            )

        def progress(step: int, total: int) -> None:
            _emit({"type": "progress", "generator": name, "index": signal["index"], "step": step, "total": total})

        media = ctx.system.generate(
            name,
            group,
            num_inference_steps=params.get("steps"),
            guidance_scale=params.get("guidance"),
            seed=params.get("seed"),
            progress=progress,
            cancel=ctx.cancel,
        )
        ref = ctx.store.put(media.data, modality=media.modality, mime=media.mime)
        part = {"type": "media", "artifact": ref.to_dict(), "generator": name}
        _emit({"type": "part", "index": signal["index"], "part": part})
        return {"generated": [{"index": signal["index"], "part": part}]}

    generate.__name__ = f"generate_{name}"
    return generate


# -- merge ----------------------------------------------------------------------------------------------------------


def merge(state: State) -> dict:
    """Interleave text and generated media in the order the LLM produced them; record the turn."""
    produced = {g["index"]: g["part"] for g in state.get("generated", [])}
    reply: list[dict[str, Any]] = []
    for part in state.get("draft", []):
        if part["type"] == "signal":
            if part["index"] in produced:
                reply.append(produced[part["index"]])
        else:
            reply.append(part)
    return {
        "reply": reply,
        "history": [{"role": "user", "parts": state["inputs"]}, {"role": "assistant", "parts": reply}],
    }
