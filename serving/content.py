"""From OpenAI messages to one mmgraph turn: strict data: URLs and base64, URL policy, counts, decoded-media checks.

Everything here runs before a request takes its place in the model queue, so a bad request costs no model time
and gets a 400 that names the offending field (``param``), e.g. ``messages[0].content[1].image_url.url``.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from pydantic import ValidationError

from core.errors import MediaError
from core.turns import ArtifactRef, MediaPart, TextPart, Turn
from serving.protocol import PART_TYPES, APIError, ChatCompletionRequest, Message, URLRef
from serving.settings import ServerSettings

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.IGNORECASE
)
AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "webm", "m4a"}

# part type -> (modality, field holding the URL or the audio object)
MEDIA_PARTS: dict[str, tuple[str, str]] = {
    "image_url": ("image", "image_url"),
    "video_url": ("video", "video_url"),
    "audio_url": ("audio", "audio_url"),
    "input_audio": ("audio", "input_audio"),
}


@dataclass
class ParsedTurn:
    """The new user turn (text + media bytes per modality, in order) and, for a new thread, the earlier turns."""

    text: str
    media: dict[str, list[bytes]] = field(default_factory=dict)
    history: list[Turn] = field(default_factory=list)  # earlier messages, media stored as artifacts


def _bad(message: str, param: str | None, code: str = "invalid_request") -> APIError:
    return APIError(400, message, param=param, code=code)


# -- bytes from a URL or base64 ---------------------------------------------------------------------------------------


def _b64(payload: str, limit: int, param: str) -> bytes:
    """Strict base64: size checked before decoding, no silently skipped characters."""
    payload = payload.strip()
    if len(payload) > (limit + 2) // 3 * 4 + 4:
        raise APIError(
            400,
            f"the medium at {param} is about {len(payload) * 3 // 4} bytes once decoded, over the "
            f"limit of {limit} bytes",
            param=param,
            code="media_too_large",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"invalid base64 at {param}: {exc}", param, "invalid_base64") from None


def _data_url(url: str, limit: int, param: str) -> bytes:
    match = _DATA_URL.match(url)
    if not match:
        raise _bad(f"malformed data: URL at {param}; expected data:<mime>;base64,<payload>", param, "invalid_url")
    if not match.group("b64"):
        raise _bad(
            f"the data: URL at {param} is not base64-encoded; use data:<mime>;base64,<payload>", param, "invalid_url"
        )
    return _b64(url[match.end() :], limit, param)


def _public_address(host: str, port: int, param: str) -> str:
    """Resolve ``host`` and return one address to connect to; refuse names resolving to any non-public address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise _bad(f"cannot resolve the host of the URL at {param}", param, "url_not_allowed") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise _bad(f"the URL at {param} points to a non-public address; refused", param, "url_not_allowed")
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address resolved and checked beforehand (no second DNS lookup, so no rebinding)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d.lower().rstrip(".") or host.endswith("." + d.lower().strip(".")) for d in allowed)


def _fetch(url: str, settings: ServerSettings, limit: int, param: str) -> bytes:
    """GET an allow-listed http(s) URL: every hop re-checked, the resolved address pinned, the body capped."""
    for _ in range(settings.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise _bad(f"the URL at {param} is not an allowed http(s) URL", param, "url_not_allowed")
        if not _host_allowed(parts.hostname, settings.allowed_media_domains):
            raise _bad(
                f"the host {parts.hostname!r} of the URL at {param} is not in allowed_media_domains",
                param,
                "url_not_allowed",
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _public_address(parts.hostname, port, param)
        conn_cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = conn_cls(parts.hostname, port, address, settings.fetch_timeout_s)
        try:
            conn.request(
                "GET",
                (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                headers={"User-Agent": "mmgraph", "Accept-Encoding": "identity"},
            )
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise _bad(f"fetching the URL at {param} answered HTTP {response.status}", param, "fetch_failed")
            data = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise _bad(f"fetching the URL at {param} failed ({type(exc).__name__})", param, "fetch_failed") from None
        finally:
            conn.close()
        if len(data) > limit:
            raise APIError(
                400, f"the medium at {param} is over the limit of {limit} bytes", param=param, code="media_too_large"
            )
        return data
    raise _bad(f"too many redirects fetching the URL at {param}", param, "fetch_failed")


def _local_file(url: str, settings: ServerSettings, limit: int, param: str) -> bytes:
    root = settings.allowed_local_media_path
    if root is None:
        raise _bad(
            f"file: URLs are not allowed (at {param}); send the medium inline as a data: URL", param, "url_not_allowed"
        )
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not path.is_relative_to(Path(root).resolve()) or not path.is_file():
        raise _bad(f"the file named at {param} is not a file under allowed_local_media_path", param, "url_not_allowed")
    if path.stat().st_size > limit:
        raise APIError(
            400, f"the file at {param} is over the limit of {limit} bytes", param=param, code="media_too_large"
        )
    return path.read_bytes()


def url_bytes(url: str, settings: ServerSettings, limit: int, param: str) -> bytes:
    """The bytes a media URL names, by the URL policy: data: always; http(s) and file: only where allowed."""
    scheme = url[: url.find(":")].lower() if ":" in url[:16] else ""
    if scheme == "data":
        return _data_url(url, limit, param)
    if scheme in ("http", "https"):
        if not settings.allowed_media_domains:
            raise _bad(
                f"remote media URLs are not allowed (at {param}); send the medium inline as a data: URL (base64)",
                param,
                "url_not_allowed",
            )
        return _fetch(url, settings, limit, param)
    if scheme == "file":
        return _local_file(url, settings, limit, param)
    raise _bad(f"unsupported media URL at {param}: only data: URLs are accepted", param, "url_not_allowed")


# -- messages -> turn -------------------------------------------------------------------------------------------------

Decode = Callable[[str, bytes], Any]


class TurnParser:
    """Parses and checks a request's messages. ``decode(modality, bytes)`` validates a medium with the system's
    limits (raising a :class:`MediaError`); ``store(modality, bytes, decoded)`` keeps it and returns its reference;
    ``generated_audio(id)`` finds the clip an assistant message's ``audio: {"id"}`` names (OpenAI's way to refer
    back to a spoken reply), or None."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        modalities: list[str],
        max_bytes: int,
        decode: Decode,
        store: Callable[[str, bytes, Any], ArtifactRef],
        generated_audio: Callable[[str], MediaPart | None] | None = None,
    ) -> None:
        self.settings, self.modalities, self.max_bytes = settings, modalities, max_bytes
        self.decode, self.store, self.generated_audio = decode, store, generated_audio
        self._media_seen = 0
        self._chars = 0

    def parse(self, request: ChatCompletionRequest) -> ParsedTurn:
        s = self.settings
        if len(request.messages) > s.max_messages:
            raise _bad(
                f"{len(request.messages)} messages, over the limit of {s.max_messages}", "messages", "too_many_messages"
            )
        if request.n != 1:
            raise _bad("only n=1 is supported", "n", "unsupported_parameter")
        if request.tools:
            raise _bad(
                "tools are not supported; generators are called by the model's signal tokens",
                "tools",
                "unsupported_parameter",
            )
        last = len(request.messages) - 1
        if request.messages[last].role != "user":
            raise _bad("the last message must have role 'user'", f"messages[{last}].role", "invalid_role")
        history: list[Turn] = []
        turn: list[dict] = []
        for i, message in enumerate(request.messages):
            parts = self._message_parts(message, f"messages[{i}]")
            if message.role == "assistant":
                parts += self._audio_reference(message, f"messages[{i}]")
            if message.role in ("system", "developer"):
                continue  # the system prompt is the config's (llm.prompt.system)
            if i == last:
                turn = parts
            elif parts:
                history.append(history_turn(message.role, parts))
        text = "\n".join(p["text"] for p in turn if p["type"] == "text")
        media: dict[str, list[bytes]] = {}
        for part in turn:
            if part["type"] == "bytes":
                media.setdefault(part["modality"], []).append(part["data"])
        return ParsedTurn(text=text, media=media, history=history)

    def _message_parts(self, message: Message, where: str) -> list[dict]:
        role = message.role
        if role not in ("user", "assistant", "system", "developer"):
            raise _bad(f"role {role!r} is not supported (user, assistant, system)", f"{where}.role", "invalid_role")
        content = message.content
        if content is None:
            return []
        if isinstance(content, str):
            return [self._text(content, f"{where}.content")]
        if len(content) > self.settings.max_parts:
            raise _bad(
                f"{len(content)} content parts, over the limit of {self.settings.max_parts}",
                f"{where}.content",
                "too_many_parts",
            )
        out = []
        for j, raw in enumerate(content):
            param = f"{where}.content[{j}]"
            kind = raw.get("type") if isinstance(raw, dict) else None
            if kind not in PART_TYPES:
                raise _bad(
                    f"unknown content part type {kind!r} at {param}; supported: {', '.join(PART_TYPES)}",
                    f"{param}.type",
                    "invalid_content_part",
                )
            try:
                part = PART_TYPES[kind].model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(x) for x in first["loc"])
                raise _bad(
                    f"invalid {kind} part at {param}: {loc}: {first['msg']}", f"{param}.{loc}", "invalid_content_part"
                ) from None
            if kind == "text":
                out.append(self._text(part.text, f"{param}.text"))
            elif role != "user":
                raise _bad(f"{role} messages may hold only text (at {param})", param, "invalid_content_part")
            else:
                out.append(self._media(kind, part, param))
        return out

    def _audio_reference(self, message: Message, where: str) -> list[dict]:
        """An assistant message's ``audio: {"id": ...}``: the clip an earlier reply's ``message.audio`` carried."""
        audio = (message.model_extra or {}).get("audio")
        if audio is None:
            return []
        audio_id = audio.get("id") if isinstance(audio, dict) else None
        if not isinstance(audio_id, str):
            raise _bad('an assistant message\'s audio must be {"id": "audio_..."}', f"{where}.audio", "invalid_audio")
        part = self.generated_audio(audio_id) if self.generated_audio is not None else None
        if part is None:
            raise _bad(
                f"no audio {audio_id[:80]!r} on this server: send the id of a message.audio it returned",
                f"{where}.audio.id",
                "audio_not_found",
            )
        return [{"type": "generated", "part": part}]

    def _text(self, text: str, param: str) -> dict:
        self._chars += len(text)
        if self._chars > self.settings.max_text_chars:
            raise _bad(
                f"the request holds more than {self.settings.max_text_chars} characters of text", param, "text_too_long"
            )
        return {"type": "text", "text": text}

    def _media(self, kind: str, part: Any, param: str) -> dict:
        modality, attr = MEDIA_PARTS[kind]
        self._media_seen += 1
        if self._media_seen > self.settings.max_media:
            raise _bad(f"more than {self.settings.max_media} media items in one request", param, "too_many_media")
        if modality not in self.modalities:
            raise _bad(
                f"this model takes no {modality} input; it takes: {', '.join(self.modalities) or 'text'}",
                param,
                "unsupported_modality",
            )
        value = getattr(part, attr)
        if kind == "input_audio":
            fmt = (value.format or "").lower()
            if fmt and fmt not in AUDIO_FORMATS:
                raise _bad(
                    f"unsupported audio format {fmt!r} at {param}.input_audio.format; supported: "
                    f"{', '.join(sorted(AUDIO_FORMATS))}",
                    f"{param}.input_audio.format",
                    "invalid_audio_format",
                )
            where = f"{param}.input_audio.data"
            data = (
                _data_url(value.data, self.max_bytes, where)
                if value.data.startswith("data:")
                else _b64(value.data, self.max_bytes, where)
            )
        else:
            url = value.url if isinstance(value, URLRef) else value
            where = f"{param}.{attr}.url" if isinstance(value, URLRef) else f"{param}.{attr}"
            data = url_bytes(url, self.settings, self.max_bytes, where)
        try:
            decoded = self.decode(modality, data)
        except MediaError as exc:
            raise APIError(400, f"{exc} (at {where})", param=where, code=exc.code) from None
        return {"type": "bytes", "modality": modality, "data": data, "ref": self.store(modality, data, decoded)}


def history_turn(role: str, parsed: list[dict]) -> Turn:
    """A parsed earlier message as a turn of the thread: text, media as the artifacts they were stored as, and a
    clip an assistant message refers back to as the generated medium it was."""
    parts: list[TextPart | MediaPart] = []
    for p in parsed:
        if p["type"] == "bytes":
            parts.append(MediaPart(artifact=p["ref"]))
        elif p["type"] == "generated":
            parts.append(p["part"])
        else:
            parts.append(TextPart(text=p["text"]))
    return Turn(role=role, parts=tuple(parts))
