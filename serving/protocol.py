"""The wire format: OpenAI Chat Completions requests (with mmgraph's extension fields), responses, stream chunks
and OpenAI-style errors.

Content parts accepted in a user message (``content`` may also be a plain string):

* ``{"type": "text", "text": ...}``
* ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` (or ``"image_url": "data:..."``)
* ``{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav" | "mp3" | "flac"}}``
* ``{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}`` (as vLLM accepts)
* ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..."}}`` (as vLLM accepts)

Extension fields of the request: ``thread_id`` (also the ``X-Thread-Id`` header), ``generate`` (generators the
reply must use), ``steps`` and ``guidance`` (diffusion knobs), ``media_format`` (``"data_url"`` inlines generated
media in the parts). The reply's ``message.content`` is its text; the interleaved parts travel in ``message.parts``
and, while streaming, in ``delta.parts``. With ``modalities: ["text", "audio"]`` the reply also carries OpenAI's
``message.audio`` (``delta.audio`` while streaming).

``POST /v1/images/generations`` takes an :class:`ImageGenerationRequest` (OpenAI's Images API).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """An error with an HTTP status and an OpenAI-style body: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- request ----------------------------------------------------------------------------------------------------------


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class URLRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(max_length=100 * 1024 * 1024)
    detail: str | None = None


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="allow")
    data: str
    format: str | None = None


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: URLRef | str


class VideoPart(_Part):
    type: Literal["video_url"]
    video_url: URLRef | str


class AudioURLPart(_Part):
    type: Literal["audio_url"]
    audio_url: URLRef | str


class InputAudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


PART_TYPES: dict[str, type[_Part]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (TextPart, ImagePart, VideoPart, AudioURLPart, InputAudioPart)
}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class AudioOutput(BaseModel):
    """OpenAI's ``audio`` request field: the voice and format of a spoken reply."""

    model_config = ConfigDict(extra="allow")
    format: str | None = None
    voice: str | dict[str, Any] | None = None  # accepted and ignored: the generators have no voices


class ChatCompletionRequest(BaseModel):
    """The fields mmgraph reads; other OpenAI fields are accepted and ignored (``n`` > 1 and tools are refused)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    modalities: list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: int = Field(1, ge=1)
    tools: list[Any] | None = None
    audio: AudioOutput | None = None
    # mmgraph extensions
    thread_id: str | None = None
    generate: list[str] | None = None
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0, le=50)
    media_format: Literal["url", "data_url"] = "url"

    def params(self) -> dict[str, Any]:
        """Generation knobs as the Assistant names them."""
        values = {
            "max_new_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
        }
        return {k: v for k, v in values.items() if v is not None}


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations``: OpenAI's fields that change the picture are read (``n``, ``size``,
    ``response_format``, ``output_format``, ``background``); others (``quality``, ``style``, ``user``, ...) are
    accepted and ignored. ``seed``, ``steps`` and ``guidance`` are the chat endpoint's knobs."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: str | None = None
    background: str | None = None
    stream: bool | None = None
    seed: int | None = None
    # mmgraph extensions
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0, le=50)

    def params(self, index: int, default_seed: int) -> dict[str, Any]:
        """The Assistant's knobs for image ``index`` of the request: its seed is ``seed + index``, so the ``n``
        images differ and the same request draws the same images again."""
        seed = (default_seed if self.seed is None else self.seed) + index
        values = {"seed": seed, "steps": self.steps, "guidance": self.guidance}
        return {k: v for k, v in values.items() if v is not None}


# -- response ---------------------------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(
    cid: str, model: str, created: int, message: dict, finish_reason: str, usage: dict, thread_id: str
) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage,
        "thread_id": thread_id,
    }


def chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict | None,
    *,
    finish_reason: str | None = None,
    thread_id: str,
    **extra: Any,
) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "thread_id": thread_id,
        **extra,
    }


def now() -> int:
    return int(time.time())
