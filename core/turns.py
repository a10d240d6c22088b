"""The turn: what a conversation is made of, as one pydantic vocabulary every room shares.

The graph state, the Python API's replies, the thread store (LangGraph checkpoints) and the server all hold these
objects; the only conversions are at the edges -- files and bytes in (:meth:`Assistant.chat`), OpenAI content
parts in and out (``serving.content`` / ``serving.app``), tokens for the LLM (:meth:`MMSystem.prompt`).

- :class:`TextPart` -- text typed by a user or produced by the assistant;
- :class:`MediaPart` -- a stored medium (:class:`ArtifactRef`: sha256 id, modality, mime, size -- never the bytes):
  an input item, or, with ``generator`` set, one the assistant generated;
- :class:`SignalPart` -- in a draft reply only: a signal group the LLM emitted, a pending call of ``generator``
  whose result will take its place;
- :class:`Turn` -- a role and its parts, in order;
- :class:`ToolCall` / :class:`Generated` -- a signal group waiting for its generator, and the generator's result.

Parts arrive as objects or as their JSON (``{"type": "text", "text": "hi"}``, what LangGraph Studio or a custom
node may send); :func:`parts` and :func:`turns` validate either into objects, and the graph's reducers do so for
every update, so state always holds objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

ARTIFACT_ID = re.compile(r"^[0-9a-f]{64}$")


class _Plain(BaseModel):
    """Frozen, exact plain data: safe to checkpoint, share between threads and compare."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactRef(_Plain):
    """A reference to stored bytes in the artifact store (:class:`core.artifacts.ArtifactStore`)."""

    id: str = Field(pattern=ARTIFACT_ID.pattern, description="sha256 of the bytes, 64 hex digits")
    modality: str = Field(description="image, audio, video, or a plugin's modality")
    mime: str = Field(description="media type, e.g. image/png")
    size: int = Field(ge=0, description="bytes")


class TextPart(_Plain):
    type: Literal["text"] = "text"
    text: str


class MediaPart(_Plain):
    type: Literal["media"] = "media"
    artifact: ArtifactRef
    generator: str | None = Field(None, description="the generator that made it; None for an input item")

    @property
    def modality(self) -> str:
        return self.artifact.modality


class SignalPart(_Plain):
    """A pending generator call in a draft (``index`` is its position in the draft)."""

    type: Literal["signal"] = "signal"
    generator: str
    index: int = Field(ge=0)


Part = Annotated[TextPart | MediaPart | SignalPart, Field(discriminator="type")]


class Turn(_Plain):
    role: Literal["user", "assistant"]
    parts: tuple[Part, ...] = ()

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def media(self) -> list[MediaPart]:
        return [p for p in self.parts if isinstance(p, MediaPart)]


class ToolCall(_Plain):
    """A signal group waiting for its generator: ``key`` finds its hidden states in the run's scratch cache."""

    index: int = Field(ge=0, description="the SignalPart's position in the draft")
    generator: str
    key: str


class Generated(_Plain):
    """A finished generator call: the medium that replaces the draft's SignalPart at ``index``."""

    index: int = Field(ge=0)
    part: MediaPart


_PARTS: TypeAdapter[list[Part]] = TypeAdapter(list[Part])
_TURNS: TypeAdapter[list[Turn]] = TypeAdapter(list[Turn])
_CALLS: TypeAdapter[list[ToolCall]] = TypeAdapter(list[ToolCall])
_GENERATED: TypeAdapter[list[Generated]] = TypeAdapter(list[Generated])


def parts(items: Iterable[Any] | None) -> list[Part]:
    """Parts from objects or their JSON (raises ``pydantic.ValidationError`` naming the bad item)."""
    return _PARTS.validate_python(list(items or []))


def turns(items: Iterable[Any] | None) -> list[Turn]:
    return _TURNS.validate_python(list(items or []))


def tool_calls(items: Iterable[Any] | None) -> list[ToolCall]:
    return _CALLS.validate_python(list(items or []))


def generated(items: Iterable[Any] | None) -> list[Generated]:
    return _GENERATED.validate_python(list(items or []))


def dump(items: Iterable[BaseModel]) -> list[dict[str, Any]]:
    """The JSON form of a list of parts / turns (what a wire format or a file holds)."""
    return [item.model_dump(mode="json") for item in items]


#: every class a checkpoint may hold: the thread store revives these and nothing else
CHECKPOINT_TYPES: tuple[type[BaseModel], ...] = (
    ArtifactRef,
    TextPart,
    MediaPart,
    SignalPart,
    Turn,
    ToolCall,
    Generated,
)
