"""The turn vocabulary (core.turns): validation at every edge, the graph state's reducers, the thread store's
serializer."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from core import turns as T
from core.turns import ArtifactRef, MediaPart, SignalPart, TextPart, ToolCall, Turn
from graphs.state import add_turns, replace_parts
from orchestrator.assistant import checkpoint_serde

REF = ArtifactRef(id="ab" * 32, modality="image", mime="image/png", size=10)


def test_parts_validate_objects_and_their_json_alike():
    as_json = [{"type": "text", "text": "hi"}, {"type": "media", "artifact": REF.model_dump()}]
    assert T.parts(as_json) == [TextPart(text="hi"), MediaPart(artifact=REF)]
    assert T.parts(T.parts(as_json)) == T.parts(as_json)  # objects pass through unchanged
    assert T.dump(T.parts(as_json)) == [{"type": "text", "text": "hi"}, {**as_json[1], "generator": None}]


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "picture", "url": "x"},  # no such part
        {"type": "text"},  # text missing
        {"type": "media", "artifact": {**REF.model_dump(), "id": "../../etc/passwd"}},  # not a sha256
        {"type": "signal", "generator": "image", "index": -1},
        {"type": "text", "text": "hi", "extra": 1},  # parts are exact
    ],
)
def test_bad_parts_are_refused(bad):
    with pytest.raises(ValidationError):
        T.parts([bad])


def test_turns_are_frozen_plain_data():
    turn = Turn(role="user", parts=[TextPart(text="a"), MediaPart(artifact=REF)])
    assert turn.text == "a" and turn.media == [MediaPart(artifact=REF)]
    with pytest.raises(ValidationError):
        turn.role = "assistant"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Turn(role="system", parts=[])  # type: ignore[arg-type]


def test_state_reducers_validate_what_a_node_writes():
    assert replace_parts([TextPart(text="old")], [{"type": "signal", "generator": "image", "index": 0}]) == [
        SignalPart(generator="image", index=0)
    ]
    history = add_turns([{"role": "user", "parts": [{"type": "text", "text": "q"}]}], [Turn(role="assistant")])
    assert history == [Turn(role="user", parts=[TextPart(text="q")]), Turn(role="assistant")]
    with pytest.raises(ValidationError):
        replace_parts([], [{"type": "text", "text": 3}])


class Intruder(BaseModel):
    """Not part of the turn vocabulary: a checkpoint naming it must not revive it."""

    command: str


def test_the_thread_store_revives_the_turn_vocabulary_and_nothing_else():
    serde = checkpoint_serde()
    turn = Turn(role="assistant", parts=[TextPart(text="here"), MediaPart(artifact=REF, generator="image")])
    calls = [ToolCall(index=0, generator="image", key="signal:1")]
    assert serde.loads_typed(serde.dumps_typed(turn)) == turn
    assert serde.loads_typed(serde.dumps_typed(calls)) == calls
    revived = serde.loads_typed(serde.dumps_typed(Intruder(command="rm -rf /")))
    assert not isinstance(revived, Intruder) and revived == {"command": "rm -rf /"}
