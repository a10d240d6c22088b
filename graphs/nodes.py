"""The nodes of the any-to-any graph: ingest -> encode (Send per item) -> reason -> generate_<name> (Send per
signal group) -> merge.

Nodes are wiring: each reads the models from ``runtime.context`` (a :class:`~graphs.context.RunContext`, whose
``system`` is the :class:`~graphs.context.Model` the graph drives) and returns a partial state update made of the
turn vocabulary (:mod:`core.turns`). The model's own steps -- encoding, the composite forward, generation -- live
in the system; nodes only decide what runs on which item and where the results go.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, cast

import torch
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send

from core import turns as T
from core.errors import UnsupportedModalityError
from core.turns import Generated, MediaPart, SignalPart, TextPart, ToolCall, Turn
from graphs.context import RunContext
from graphs.state import State


def _writer() -> Callable[[dict[str, Any]], None]:
    """The run's custom stream writer (tokens, progress), taken in the node's own thread so that callbacks running
    elsewhere -- the engine's worker, when turns are batched -- still reach this run's stream; a no-op writer when
    the graph is not being streamed."""
    try:
        return cast(Callable[[dict[str, Any]], None], get_stream_writer())
    except RuntimeError:  # called outside a runnable context (e.g. a node function used directly in a test)
        return lambda event: None


def _emit(event: dict[str, Any]) -> None:
    """Send a custom stream event from the node's own thread."""
    _writer()(event)


def _conversation(state: State) -> list[Turn]:
    """The thread's finished turns plus this turn's user message."""
    return T.turns(state.get("history")) + [Turn(role="user", parts=tuple(T.parts(state["inputs"])))]


def _input_media(conversation: list[Turn]) -> list[MediaPart]:
    """Every input medium of the conversation, in order (generated media reach the LLM as signal tokens)."""
    return [p for turn in conversation for p in turn.media if p.generator is None]


def _feature_key(ctx: RunContext, part: MediaPart) -> str:
    return f"{part.artifact.id}:{ctx.system.encoder_key(part.modality)}"


# -- ingest ---------------------------------------------------------------------------------------------------------


def ingest(state: State, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Validate the turn before any model runs: known modalities and generators, media decodable within limits."""
    system = runtime.context.system
    for name in list(state.get("generate") or []) + list(state.get("allow") or []):
        if name not in system.generator_names:
            raise UnsupportedModalityError(
                f"unknown generator {name!r}; this system has: {', '.join(system.generator_names) or 'none'}"
            )
    for part in T.parts(state["inputs"]):
        if isinstance(part, SignalPart):
            raise ValueError("a user turn holds text and media parts, not signal parts")
        if isinstance(part, MediaPart):
            if part.modality not in system.modality_names:
                raise UnsupportedModalityError(
                    f"this system takes no {part.modality} input; it takes: "
                    f"{', '.join(system.modality_names) or 'text'}"
                )
            system.decode_cached(part.modality, part.artifact.id, runtime.context.store)
    return {"generated": Overwrite([]), "signals": [], "draft": [], "reply": [], "finish_reason": ""}


def route_inputs(state: State, runtime: Runtime[RunContext]) -> list[Send] | str:
    """One ``encode`` task per media item (this turn's and earlier turns') whose features are not cached."""
    ctx = runtime.context
    sends, seen = [], set()
    for part in _input_media(_conversation(state)):
        key = _feature_key(ctx, part)
        if key not in ctx.features and key not in seen:
            seen.add(key)
            sends.append(Send("encode", {"item": part}))
    return sends or "reason"


# -- encode ---------------------------------------------------------------------------------------------------------


def encode(payload: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run one item through its frozen encoder; the features stay in the context cache, state gets the key."""
    ctx = runtime.context
    part: MediaPart = payload["item"]
    media = ctx.system.decode_cached(part.modality, part.artifact.id, ctx.store)
    feats = ctx.system.encode(part.modality, [media])  # (1, G, T, D_enc)
    key = _feature_key(ctx, part)
    ctx.features.put(key, feats)
    _emit({"type": "encoded", "modality": part.modality, "artifact": part.artifact.id})
    return {"features": {part.artifact.id: key}}


# -- reason ---------------------------------------------------------------------------------------------------------


def reason(state: State, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run the LLM over the conversation with its media, and turn its signal groups into tool calls."""
    ctx = runtime.context
    system = ctx.system
    params = state.get("params") or {}
    conversation = _conversation(state)

    # 1. Every input medium's cached encoder features, in order of appearance per modality.
    per_modality: dict[str, list[torch.Tensor]] = {}
    for part in _input_media(conversation):
        feats = ctx.features.get(_feature_key(ctx, part))
        if feats is None:  # evicted between encode and reason: recompute
            feats = system.encode(part.modality, [system.decode_cached(part.modality, part.artifact.id, ctx.store)])
        per_modality.setdefault(part.modality, []).append(feats)
    features = {m: torch.cat(items) for m, items in per_modality.items()}  # (N_items, G, T, D_enc)

    # 2. The system's composite forward and decoding loop.
    llm = system.config.llm
    emit = _writer()
    result = system.respond(
        conversation,
        features,
        max_new_tokens=params.get("max_new_tokens", llm.max_new_tokens),
        temperature=params.get("temperature", llm.temperature),
        top_p=params.get("top_p", 1.0),
        seed=params.get("seed"),
        require=state.get("generate") or [],
        allow=state.get("allow"),
        on_text=lambda text: emit({"type": "token", "text": text}),
        cancel=ctx.cancel,
    )

    # 3. Signal groups become tool calls; their hidden states wait in the run-scoped scratch cache.
    draft: list[Any] = []
    signals: list[ToolCall] = []
    for segment in result.segments:
        if hasattr(segment, "hidden"):
            key = f"signal:{uuid.uuid4().hex}"
            ctx.scratch.put(key, segment)
            signals.append(ToolCall(index=len(draft), generator=segment.generator, key=key))
            draft.append(SignalPart(generator=segment.generator, index=len(draft)))
        elif segment.text:
            draft.append(TextPart(text=segment.text))
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}
    return {"draft": draft, "signals": signals, "finish_reason": result.finish_reason, "usage": usage}


def route_signals(state: State) -> list[Send] | str:
    """One generator task per signal group (parallel), or straight to merge."""
    calls = T.tool_calls(state.get("signals"))
    if not calls:
        return "merge"
    params = state.get("params") or {}
    return [Send(f"generate_{call.generator}", {"signal": call, "params": params}) for call in calls]


# -- generate -------------------------------------------------------------------------------------------------------


def make_generate_node(name: str) -> Callable[[dict[str, Any], Runtime[RunContext]], dict[str, Any]]:
    """A node that calls generator ``name``: output projector -> diffusion pipeline -> artifact."""

    def generate(payload: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context
        call, params = T.tool_calls([payload["signal"]])[0], payload["params"]
        group = ctx.scratch.get(call.key)
        if group is None:
            raise RuntimeError(
                f"signal states for {name} were lost (key {call.key}): they live in the memory "
                "of the process that ran the LLM, so a paused turn resumes only there"
            )

        emit = _writer()

        def progress(step: int, total: int) -> None:
            emit({"type": "progress", "generator": name, "index": call.index, "step": step, "total": total})

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
        part = MediaPart(artifact=ref, generator=name)
        _emit({"type": "part", "index": call.index, "part": part})
        return {"generated": [Generated(index=call.index, part=part)]}

    generate.__name__ = f"generate_{name}"
    return generate


# -- merge ----------------------------------------------------------------------------------------------------------


def merge(state: State) -> dict[str, Any]:
    """Interleave text and generated media in the order the LLM produced them; record the turn."""
    produced = {g.index: g.part for g in T.generated(state.get("generated"))}
    reply: list[Any] = []
    for part in T.parts(state.get("draft")):
        if isinstance(part, SignalPart):
            if part.index in produced:
                reply.append(produced[part.index])
        else:
            reply.append(part)
    return {
        "reply": reply,
        "history": [
            Turn(role="user", parts=tuple(T.parts(state["inputs"]))),
            Turn(role="assistant", parts=tuple(reply)),
        ],
    }
