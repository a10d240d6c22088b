"""State schemas of the any-to-any graph.

State is checkpointed after every step, so it holds only plain data: the turn vocabulary of :mod:`core.turns`
(text, :class:`~core.turns.MediaPart` with an artifact reference -- never bytes --, pending
:class:`~core.turns.SignalPart` calls), and small keys into the run-scoped caches of the runtime context. Tensors,
decoded media and models never enter it.

Every key that holds parts has a reducer that validates what a node writes, so a node (ours, a user's, or
LangGraph Studio sending JSON) may return objects or their JSON (``{"type": "text", "text": "..."}``) and the
state always holds objects, as LangGraph's ``add_messages`` does for chat messages.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, TypeVar

# typing_extensions' TypedDict: pydantic builds JSON schemas of the state (LangGraph Studio's input form,
# ``graph.get_input_jsonschema()``) only from it on Python < 3.12
from typing_extensions import TypedDict

from core import turns as T
from core.turns import Generated, Part, ToolCall, Turn

_K = TypeVar("_K")
_V = TypeVar("_V")


def merge_dicts(left: dict[_K, _V] | None, right: dict[_K, _V] | None) -> dict[_K, _V]:
    """Reducer for keys written by parallel encode branches."""
    return {**(left or {}), **(right or {})}


def replace_parts(left: list[Part] | None, right: list[Any] | None) -> list[Part]:
    """The update replaces the value, validated into parts."""
    return T.parts(right)


def add_turns(left: list[Turn] | None, right: list[Any] | None) -> list[Turn]:
    """Finished turns accumulate (both sides validated: a thread stored as JSON reads back as objects)."""
    return T.turns(left) + T.turns(right)


def replace_calls(left: list[ToolCall] | None, right: list[Any] | None) -> list[ToolCall]:
    return T.tool_calls(right)


def add_generated(left: list[Generated] | None, right: list[Any] | None) -> list[Generated]:
    """Results of parallel generator branches accumulate; ``Overwrite([])`` clears them for a new turn."""
    return T.generated(left) + T.generated(right)


class InputState(TypedDict):
    """One user turn."""

    inputs: Annotated[list[Part], replace_parts]  # text and media parts, in the order the user gave them
    generate: NotRequired[list[str]]  # generators the reply must use (``generate=["image"]``)
    allow: NotRequired[list[str] | None]  # generators the reply may use (None: all)
    params: NotRequired[dict[str, Any]]  # max_new_tokens, temperature, seed, steps, guidance ...


class OutputState(TypedDict):
    reply: Annotated[list[Part], replace_parts]  # the interleaved reply: text and media parts
    finish_reason: str
    usage: NotRequired[dict[str, int]]  # prompt_tokens, completion_tokens of the LLM call


class State(InputState, OutputState):
    history: Annotated[list[Turn], add_turns]  # finished turns
    features: Annotated[dict[str, str], merge_dicts]  # artifact id -> feature-cache key
    draft: Annotated[list[Part], replace_parts]  # the LLM's reply, signal parts still unresolved
    signals: Annotated[list[ToolCall], replace_calls]  # signal groups waiting for their generator
    generated: Annotated[list[Generated], add_generated]  # finished generator calls
