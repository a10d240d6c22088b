"""The OpenAI-compatible HTTP backend and the web chat page.

    POST /v1/chat/completions   chat (stream: true answers with SSE chunks ending in ``data: [DONE]``)
    POST /v1/images/generations OpenAI's Images API: one Assistant turn per image, the image generator forced
    GET  /v1/models             the served model
    GET  /v1/artifacts/{id}     an input or generated medium, with its content type
    GET  /v1/threads/{id}       a thread's turns (the web page restores a conversation with it)
    GET  /health                liveness and queue occupancy
    GET  /                      the web chat page

A request is parsed and its media decoded with limits *before* it takes a place in the model queue; every
refusal is a 4xx with an OpenAI-style error body. See docs/serving.md.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from importlib import resources
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import CancelledError, MediaError, MMGraphError
from core.turns import ArtifactRef, MediaPart, Part, TextPart
from orchestrator.assistant import Assistant
from serving.content import ParsedTurn, TurnParser
from serving.protocol import (
    APIError,
    ChatCompletionRequest,
    ImageGenerationRequest,
    chunk,
    completion,
    completion_id,
    now,
)
from serving.scheduler import END, Job, Scheduler
from serving.settings import ServerSettings

log = logging.getLogger("mmgraph.server")

_THREAD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_PART_TYPE = {"image": "image_url", "audio": "audio_url", "video": "video_url"}
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")

#: audio formats ``message.audio`` can carry (OpenAI's ``audio.format``): the audio generators write WAV
AUDIO_OUTPUT_FORMATS = ("wav",)
#: ``message.audio.expires_at`` is this many seconds after the reply; the artifact store itself keeps media until
#: it is cleaned, so the audio stays usable (``GET /v1/artifacts/{id}``, ``{"role": "assistant", "audio": {"id"}}``)
AUDIO_KEPT_S = 24 * 3600
AUDIO_ID_PREFIX = "audio_"

Body = TypeVar("Body", bound=BaseModel)


# -- request body limit -----------------------------------------------------------------------------------------------


class _BodyTooLarge(APIError):
    """Raised from ``receive`` when the streamed body passes the limit; the app's APIError handler answers 413."""


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, by Content-Length before reading and by
    counting while the body streams in (Starlette has no limit of its own)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = APIError(413, f"the request body is over the limit of {self.limit} bytes", code="body_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_error(send, error)
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(error.status, error.message, code=error.code)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, error)


async def _send_error(send: Any, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- errors -----------------------------------------------------------------------------------------------------------


def api_error(exc: BaseException) -> APIError:
    """Map anything a turn can raise to the error a client sees (internal details stay in the server log)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, MediaError):
        return APIError(400, str(exc), code=exc.code)
    if isinstance(exc, CancelledError):
        return APIError(499, "the request was cancelled", code="cancelled")
    if isinstance(exc, MMGraphError):
        return APIError(400, str(exc), code=type(exc).__name__)
    log.error("turn failed", exc_info=exc)
    return APIError(500, "internal error while running the model", type="server_error", code="internal_error")


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


# -- the app ----------------------------------------------------------------------------------------------------------


class Server:
    """Holds the assistant, the settings and the scheduler; its methods are the route handlers' bodies."""

    def __init__(self, assistant: Any, settings: ServerSettings) -> None:
        self.assistant, self.settings = assistant, settings
        self.system = assistant.system
        self.model = settings.served_model_name or assistant.config.name
        # turns run concurrently, their model calls batched by the system's engine (orchestrator.engine)
        self.owns_engine = settings.batch_size > 1 and self.system.engine is None
        if self.owns_engine:
            self.system.start_engine(max_batch=settings.batch_size)
        self.scheduler = Scheduler(settings.queue_size, workers=settings.batch_size)
        self.created = now()

    def close(self) -> None:
        self.scheduler.shutdown()
        if self.owns_engine:
            self.system.stop_engine()

    # -- parsing ---------------------------------------------------------------------------------------------------
    async def parse_request(self, request: Request) -> ChatCompletionRequest:
        req = await self.parse_body(request, ChatCompletionRequest)
        self.check_model(req.model)
        return req

    async def parse_body(self, request: Request, schema: type[Body]) -> Body:
        """The JSON body validated against ``schema``; a 400 naming the first bad field otherwise."""
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise APIError(
                400, f"the body is not valid JSON: {getattr(exc, 'msg', exc)}{where}", code="invalid_json"
            ) from None
        if not isinstance(payload, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        try:
            return schema.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or None
            raise APIError(400, f"invalid request: {loc}: {first['msg']}", param=loc, code="invalid_request") from None

    def check_model(self, model: str) -> None:
        if model != self.model:
            raise APIError(
                404,
                f"the model {model!r} does not exist; this server serves {self.model!r}",
                param="model",
                code="model_not_found",
            )

    def outputs(self, req: ChatCompletionRequest) -> tuple[list[str], list[str] | None]:
        """(generate, allow): ``modalities`` names exactly the outputs wanted; ``generate`` forces generators."""
        names = self.system.generator_names
        generate, allow = list(req.generate or []), None
        if req.modalities is not None:
            unknown = [m for m in req.modalities if m != "text" and m not in names]
            if unknown:
                raise APIError(
                    400,
                    f"unknown output modality {unknown[0]!r}; this model outputs: {', '.join(['text', *names])}",
                    param="modalities",
                    code="unsupported_modality",
                )
            wanted = [m for m in req.modalities if m != "text"]
            generate, allow = sorted(set(generate) | set(wanted)), wanted
        for name in generate:
            if name not in names:
                raise APIError(
                    400,
                    f"unknown generator {name!r}; this model has: {', '.join(names) or 'none'}",
                    param="generate",
                    code="unsupported_modality",
                )
        return generate, allow

    def wants_audio(self, req: ChatCompletionRequest) -> bool:
        """Whether the reply carries OpenAI's ``message.audio``: ``modalities`` asks for audio. An ``audio.format``
        the generators do not write is refused (``voice`` is accepted and ignored)."""
        fmt = req.audio.format if req.audio is not None else None
        if fmt is not None and fmt.lower() not in AUDIO_OUTPUT_FORMATS:
            raise APIError(
                400,
                f"audio.format {fmt!r} cannot be produced: this server returns audio as "
                f"{' or '.join(AUDIO_OUTPUT_FORMATS)}",
                param="audio.format",
                code="unsupported_audio_format",
            )
        return "audio" in (req.modalities or [])

    def generator_for(self, modality: str) -> str | None:
        """The first generator that makes ``modality`` (the tiny world's are named after their modality)."""
        for name in self.system.generator_names:
            if self.system.generator(name).modality == modality:
                return name
        return None

    def generated_audio(self, audio_id: str) -> MediaPart | None:
        """The clip a ``message.audio.id`` of an earlier reply names (``audio_<artifact id>``), for an assistant
        message that refers back to it."""
        artifact_id = audio_id.removeprefix(AUDIO_ID_PREFIX)
        store = self.assistant.store
        generator = self.generator_for("audio")
        if not audio_id.startswith(AUDIO_ID_PREFIX) or generator is None or artifact_id not in store:
            return None
        ref = store.ref(artifact_id)
        return MediaPart(artifact=ref, generator=generator) if ref.modality == "audio" else None

    def parse_turn(self, req: ChatCompletionRequest) -> ParsedTurn:
        def keep(modality: str, data: bytes, decoded: Any) -> ArtifactRef:
            ref = self.assistant.add_media(data, modality)
            self.system.remember_decoded(modality, ref.id, decoded)
            return ref

        parser = TurnParser(
            self.settings,
            modalities=self.system.modality_names,
            max_bytes=self.system.config.limits.max_bytes,
            decode=self.system.decode,
            store=keep,
            generated_audio=self.generated_audio,
        )
        return parser.parse(req)

    # -- parts -----------------------------------------------------------------------------------------------------
    def part_json(self, part: Part, base_url: str, *, inline: bool = False) -> dict:
        """A turn's part on the wire: text, or a media part with an absolute artifact URL (``inline``: a ``data:``
        URL holding the bytes) under the OpenAI-style key of its modality (``image_url``, ``audio_url``,
        ``video_url``), so a client renders it as it renders a user's content part."""
        if isinstance(part, TextPart):
            return {"type": "text", "text": part.text}
        if not isinstance(part, MediaPart):
            raise TypeError(f"a {part.type} part has no wire form")
        ref = part.artifact
        kind = _PART_TYPE.get(ref.modality, "file_url")
        url = _data_url(ref.mime, self.assistant.store.get(ref.id)) if inline else f"{base_url}v1/artifacts/{ref.id}"
        return {"type": kind, kind: {"url": url}, "artifact": ref.model_dump(mode="json"), "generator": part.generator}

    def audio_json(self, part: Part) -> dict | None:
        """OpenAI's audio object for a generated WAV clip, without the transcript: ``{"id", "data"}``; ``None`` for
        any other part."""
        if not (isinstance(part, MediaPart) and part.generator is not None and part.artifact.mime == "audio/wav"):
            return None
        data = base64.b64encode(self.assistant.store.get(part.artifact.id)).decode()
        return {"id": AUDIO_ID_PREFIX + part.artifact.id, "data": data}

    def reply_audio(self, reply: Any, created: int) -> dict | None:
        """``message.audio``: the reply's first generated clip, with its expiry and the reply's text as transcript."""
        for part in reply.parts:
            audio = self.audio_json(part)
            if audio is not None:
                return {**audio, "expires_at": created + AUDIO_KEPT_S, "transcript": reply.text}
        return None

    # -- running ---------------------------------------------------------------------------------------------------
    def start(self, req: ChatCompletionRequest, turn: ParsedTurn, thread_id: str) -> Job:
        """Run the turn on a model thread; a streamed request gets every event, a plain one only the last (no
        per-token events made or handed to the event loop)."""
        generate, allow = self.outputs(req)
        job = self.scheduler.admit()

        def run(cancel: Any):
            if turn.history:
                self.assistant.seed_history(thread_id, turn.history)
            yield from self.assistant.stream(
                turn.text,
                media=turn.media,
                thread_id=thread_id,
                generate=generate,
                allow=allow,
                cancel=cancel,
                deltas=bool(req.stream),
                **req.params(),
            )

        self.scheduler.start(job, run)
        return job

    def image_request(self, req: ImageGenerationRequest) -> tuple[str, tuple[int, int] | None]:
        """Check what an images request asks for against what the system draws; returns the image generator and
        the size it draws (None where the system does not say)."""
        if req.model is not None:
            self.check_model(req.model)
        name = self.generator_for("image")
        if name is None:
            raise APIError(400, "this model generates no images", param="model", code="unsupported_modality")
        if req.stream:
            raise APIError(
                400, "streamed image generation is not supported", param="stream", code="unsupported_parameter"
            )
        if len(req.prompt) > self.settings.max_text_chars:
            raise APIError(
                400,
                f"the prompt is over the limit of {self.settings.max_text_chars} characters",
                param="prompt",
                code="text_too_long",
            )
        if (req.output_format or "png").lower() != "png":
            raise APIError(
                400,
                f"output_format {req.output_format!r} cannot be produced: the image generator writes png",
                param="output_format",
                code="unsupported_output_format",
            )
        if (req.background or "auto") not in ("auto", "opaque"):
            raise APIError(
                400,
                f"background {req.background!r} cannot be produced: the images are opaque",
                param="background",
                code="unsupported_parameter",
            )
        size = self.image_size(name)
        if req.size not in (None, "auto"):
            match = _SIZE.match(req.size)
            if size is None or match is None or (int(match[1]), int(match[2])) != size:
                drawn = f"it draws {size[0]}x{size[1]}" if size else "its image size is not known"
                raise APIError(
                    400,
                    f"size {req.size!r} cannot be produced: {drawn}; send that size, 'auto' or no size",
                    param="size",
                    code="unsupported_size",
                )
        return name, size

    def image_size(self, name: str) -> tuple[int, int] | None:
        """(width, height) generator ``name`` draws: its configured ``width`` / ``height``, each else its UNet's
        sample size times the VAE's scale factor (what diffusers draws by default); None where neither is known."""
        options = self.system.config.generators[name].options
        pipeline = getattr(self.system.generator(name), "pipeline", None)
        sample = getattr(getattr(getattr(pipeline, "unet", None), "config", None), "sample_size", None)
        scale = getattr(pipeline, "vae_scale_factor", None)
        default = sample * scale if isinstance(sample, int) and isinstance(scale, int) else None
        width, height = options.get("width") or default, options.get("height") or default
        return (int(width), int(height)) if width and height else None

    def start_images(self, req: ImageGenerationRequest, name: str) -> Job:
        """One queued job for the whole request: ``n`` Assistant turns on fresh threads, the image generator
        forced and the others forbidden, image ``i`` seeded ``seed + i``."""
        job = self.scheduler.admit()
        default_seed = self.system.config.seed

        def run(cancel: Any):
            for index in range(req.n):
                if cancel.is_set():
                    return
                yield from self.assistant.stream(
                    req.prompt,
                    thread_id=uuid.uuid4().hex,
                    generate=[name],
                    allow=[name],
                    cancel=cancel,
                    deltas=False,  # only each turn's reply is read
                    **req.params(index, default_seed),
                )

        self.scheduler.start(job, run)
        return job

    def image_item(self, reply: Any, name: str, response_format: str, base_url: str) -> dict:
        """One entry of the images answer's ``data``: the turn's first generated image as base64 or as its artifact
        URL, with its artifact reference (an extension field)."""
        part = next((p for p in reply.parts if isinstance(p, MediaPart) and p.generator == name), None)
        if part is None:
            raise APIError(500, "the model drew no image for this prompt", type="server_error", code="no_image")
        ref = part.artifact
        if response_format == "b64_json":
            item = {"b64_json": base64.b64encode(self.assistant.store.get(ref.id)).decode()}
        else:
            item = {"url": f"{base_url}v1/artifacts/{ref.id}"}
        return {**item, "artifact": ref.model_dump(mode="json")}

    async def events(self, job: Job, request: Request, *, poll: float = 0.25) -> AsyncIterator[Any]:
        """The job's events as they come; sets the cancel flag if the client goes away (checked every ``poll``
        seconds, busy or not) or this iterator is closed. Yields ``None`` as a heartbeat when nothing arrived for
        ``poll`` seconds."""
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            while True:
                try:
                    item = await asyncio.wait_for(job.items.get(), poll)
                except TimeoutError:
                    item = None
                if loop.time() - checked >= poll:
                    checked = loop.time()
                    if await request.is_disconnected():
                        return
                if item is None:
                    yield None
                    continue
                if item is END:
                    return
                kind, payload = item
                if kind == "error":
                    raise payload
                yield payload
        finally:
            job.cancel.set()  # a no-op after a normal end; stops the model thread's work otherwise


def create_app(
    assistant: Any = None, *, settings: ServerSettings | None = None, config: Any = None, **assistant_kwargs: Any
) -> FastAPI:
    """The FastAPI app over ``assistant`` (or a new :class:`~orchestrator.assistant.Assistant` built from ``config``
    and ``assistant_kwargs``: ``weights``, ``db``, ``artifacts``, ``device``)."""
    if assistant is None:
        assistant = Assistant.from_config(config, **assistant_kwargs)
    settings = settings or ServerSettings()
    server = Server(assistant, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(
        title="mmgraph",
        summary="OpenAI-compatible any-to-any multimodal chat",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = server

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(
            APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        )

    @app.exception_handler(Exception)
    async def _any_error(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(api_error(exc))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": server.model, "queue": server.scheduler.stats()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(server)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict:
        if model_id != server.model:
            raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")
        return _model_card(server)

    @app.get("/v1/artifacts/{artifact_id}")
    async def artifact(artifact_id: str) -> FileResponse:
        store = server.assistant.store
        if artifact_id not in store:
            raise APIError(404, f"no artifact {artifact_id!r}", param="artifact_id", code="not_found")
        ref = store.ref(artifact_id)
        return FileResponse(
            store.path(artifact_id),
            media_type=ref.mime,
            headers={"Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/v1/threads/{thread_id}")
    async def thread(thread_id: str, request: Request) -> dict:
        _check_thread_id(thread_id)
        turns = await run_in_threadpool(server.assistant.history, thread_id)
        base = str(request.base_url)
        return {
            "object": "thread",
            "id": thread_id,
            "turns": [{"role": t.role, "parts": [server.part_json(p, base) for p in t.parts]} for t in turns],
        }

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("serving").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(
            html.replace("{{MODEL}}", escape(server.model, quote=True)),
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                "media-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                "script-src 'self' 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await server.parse_request(request)
        thread_id = request.headers.get("x-thread-id") or req.thread_id
        if thread_id is not None:
            _check_thread_id(thread_id)
        thread_id = thread_id or uuid.uuid4().hex
        audio = server.wants_audio(req)
        inline = req.media_format == "data_url"
        server.scheduler.check()  # a full queue refuses before any medium is decoded
        turn = await run_in_threadpool(server.parse_turn, req)
        job = server.start(req, turn, thread_id)
        cid, created, base = completion_id(), now(), str(request.base_url)
        headers = {"X-Thread-Id": thread_id}
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _sse(server, job, request, cid, created, base, thread_id, include_usage, audio=audio, inline=inline),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        reply = None
        try:
            async for event in server.events(job, request):
                if event is not None and event.type == "done":
                    reply = event.reply
        except BaseException as exc:  # noqa: BLE001 - mapped to an OpenAI error body
            return _error_response(api_error(exc))
        if reply is None:  # the client went away
            return _error_response(APIError(499, "the request was cancelled", code="cancelled"))
        message = {
            "role": "assistant",
            "content": reply.text,
            "parts": [server.part_json(p, base, inline=inline) for p in reply.parts],
        }
        if audio and (audio_object := server.reply_audio(reply, created)) is not None:
            message["audio"] = audio_object
        return JSONResponse(
            completion(cid, server.model, created, message, _finish(reply), _usage(reply), thread_id), headers=headers
        )

    @app.post("/v1/images/generations")
    async def images(request: Request):
        req = await server.parse_body(request, ImageGenerationRequest)
        name, _ = server.image_request(req)
        job = server.start_images(req, name)
        created, base = now(), str(request.base_url)
        replies = []
        try:
            async for event in server.events(job, request):
                if event is not None and event.type == "done":
                    replies.append(event.reply)
        except BaseException as exc:  # noqa: BLE001 - mapped to an OpenAI error body
            return _error_response(api_error(exc))
        if len(replies) < req.n:  # the client went away
            return _error_response(APIError(499, "the request was cancelled", code="cancelled"))
        try:
            data = [server.image_item(r, name, req.response_format or "url", base) for r in replies]
        except APIError as exc:
            return _error_response(exc)
        first = server.assistant.store.get(data[0]["artifact"]["id"])
        width, height = Image.open(io.BytesIO(first)).size  # what was drawn, read from the PNG's header
        return JSONResponse({"created": created, "data": data, "output_format": "png", "size": f"{width}x{height}"})

    return BodyLimit(app, settings.max_body_bytes)  # type: ignore[return-value]


def _check_thread_id(thread_id: str) -> None:
    if not _THREAD_ID.match(thread_id):
        raise APIError(
            400,
            "a thread id is 1-128 characters of letters, digits and _ . : -",
            param="thread_id",
            code="invalid_thread_id",
        )


def _model_card(server: Server) -> dict:
    return {
        "id": server.model,
        "object": "model",
        "created": server.created,
        "owned_by": "mmgraph",
        "input_modalities": ["text", *server.system.modality_names],
        "output_modalities": ["text", *server.system.generator_names],
        # not an OpenAI field (clients ignore it): what the model can be asked, for the web page and newcomers
        **({"vocabulary": vocabulary.model_dump()} if (vocabulary := server.system.config.vocabulary) else {}),
    }


def _finish(reply: Any) -> str:
    return {"cancelled": "stop"}.get(reply.finish_reason, reply.finish_reason)


def _usage(reply: Any) -> dict:
    prompt, completion_tokens = reply.usage.get("prompt_tokens", 0), reply.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _data(obj: dict) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def _sse(
    server: Server,
    job: Job,
    request: Request,
    cid: str,
    created: int,
    base: str,
    thread_id: str,
    include_usage: bool,
    *,
    audio: bool = False,
    inline: bool = False,
) -> AsyncIterator[bytes]:
    """The stream: role, then text deltas as tokens come, each generated medium in ``delta.parts`` when it is
    ready, generator progress as top-level ``progress``, and a last chunk with ``finish_reason`` and the whole
    interleaved reply in ``parts``. A failure after the 200 is an ``{"error": ...}`` event (the openai client
    raises it).

    With ``audio`` (``modalities`` asks for audio) the stream also carries OpenAI's partial audio objects in
    ``delta.audio``: each text delta again as ``{"transcript"}``, the first generated clip as ``{"id", "data"}``
    once it is ready, and, just before the last chunk, the final update ``{"expires_at"}``."""
    model = server.model
    audio_sent = False
    yield _data(chunk(cid, model, created, {"role": "assistant", "content": ""}, thread_id=thread_id))
    try:
        async for event in server.events(job, request):
            if event is None:
                yield b": keep-alive\n\n"
            elif event.type == "token":
                text = event.data["text"]
                delta: dict[str, Any] = {"content": text, "audio": {"transcript": text}} if audio else {"content": text}
                yield _data(chunk(cid, model, created, delta, thread_id=thread_id))
            elif event.type == "part":
                part = server.part_json(event.data["part"], base, inline=inline)
                yield _data(chunk(cid, model, created, {"parts": [part]}, thread_id=thread_id))
                clip = server.audio_json(event.data["part"]) if audio and not audio_sent else None
                if clip is not None:
                    audio_sent = True
                    yield _data(chunk(cid, model, created, {"audio": clip}, thread_id=thread_id))
            elif event.type == "progress":
                progress = {k: event.data[k] for k in ("generator", "step", "total") if k in event.data}
                yield _data(chunk(cid, model, created, None, thread_id=thread_id, progress=progress))
            elif event.type == "done":
                reply = event.reply
                if audio_sent:
                    final = {"audio": {"expires_at": created + AUDIO_KEPT_S}}
                    yield _data(chunk(cid, model, created, final, thread_id=thread_id))
                parts = [server.part_json(p, base, inline=inline) for p in reply.parts]
                yield _data(
                    chunk(cid, model, created, {}, finish_reason=_finish(reply), thread_id=thread_id, parts=parts)
                )
                if include_usage:
                    yield _data(chunk(cid, model, created, None, thread_id=thread_id, usage=_usage(reply)))
    except Exception as exc:  # noqa: BLE001 - reported in the stream, the status line is already sent
        yield _data(api_error(exc).body())
    finally:
        job.cancel.set()  # the client went away (the stream was closed) or the turn ended
    yield b"data: [DONE]\n\n"
