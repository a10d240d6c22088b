"""State schemas of the any-to-any graph.

State is checkpointed after every step, so it holds only plain data: text, :class:`ArtifactRef` dicts
(sha256 ids of stored media) and small keys into the run-scoped caches of the runtime context. Tensors,
decoded media and models never enter it.

Part dicts (the vocabulary of inputs, drafts and replies):
- ``{"type": "text", "text": str}``
- ``{"type": "media", "artifact": ArtifactRef-dict}`` -- an input item, or (with ``"generator"``) a generated one
- ``{"type": "signal", "generator": str, "index": int}`` -- in a draft only: a pending tool call
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict


def merge_dicts(left: dict | None, right: dict | None) -> dict:
    """Reducer for keys written by parallel encode branches."""
    return {**(left or {}), **(right or {})}


class InputState(TypedDict):
    """One user turn."""

    inputs: list[dict]  # text and media parts, in the order the user gave them
    generate: NotRequired[list[str]]  # generators the reply must use (``generate=["image"]``)
    allow: NotRequired[list[str] | None]  # generators the reply may use (None: all)
    params: NotRequired[dict[str, Any]]  # max_new_tokens, temperature, seed, steps, guidance ...


class OutputState(TypedDict):
    reply: list[dict]  # the interleaved reply: text and media parts
    finish_reason: str
    usage: NotRequired[dict[str, int]]  # prompt_tokens, completion_tokens of the LLM call


class State(InputState, OutputState):
    history: Annotated[list[dict], operator.add]  # finished turns: {"role": "user"|"assistant", "parts": [...]}
    features: Annotated[dict[str, str], merge_dicts]  # artifact id -> feature-cache key
    draft: list[dict]  # the LLM's reply with signal parts still unresolved
    signals: list[dict]  # {"index", "generator", "key"}: signal groups waiting for their generator
    generated: Annotated[list[dict], operator.add]  # {"index", "part"}: finished generator calls
