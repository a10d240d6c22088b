"""Server settings: plain data, safe defaults. Every limit a request can hit is here."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ServerSettings(BaseModel):
    """What ``mmgraph serve`` accepts and how much work it takes on (the media limits themselves are the system's
    ``SystemConfig.limits``: bytes, pixels, minimum side, audio / video duration, frames)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        48 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request body in bytes (a larger one is answered 413), checked against Content-Length and while "
            "the body streams in (base64 media are 4/3 of their size)."
        ),
    )
    max_messages: int = Field(64, ge=1, description="Most messages in one request.")
    max_parts: int = Field(16, ge=1, description="Most content parts in one message.")
    max_media: int = Field(8, ge=0, description="Most media items (images, audio clips, videos) in one request.")
    max_text_chars: int = Field(16_000, ge=1, description="Most characters of text in one request.")
    queue_size: int = Field(
        8,
        ge=0,
        description="Requests that may wait while the model is busy; one more is answered 429 with Retry-After.",
    )
    batch_size: int = Field(
        8,
        ge=1,
        description="Turns that run at once, their decoding, encoding and generation batched across requests "
        "(continuous batching); 1: one turn at a time.",
    )
    allowed_media_domains: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts whose http(s) media URLs may be fetched (exact host or a subdomain of it). Empty: only data: URLs. "
            "Even when listed, hosts that resolve to loopback, private, link-local or reserved addresses are refused."
        ),
    )
    allowed_local_media_path: Path | None = Field(
        None, description="A folder whose files may be named by file:// URLs; none: file URLs are refused."
    )
    fetch_timeout_s: float = Field(10.0, gt=0, description="Connect + read timeout of one allowed media fetch.")
    max_redirects: int = Field(3, ge=0, description="Redirects followed (each hop re-checked) on an allowed fetch.")
    served_model_name: str | None = Field(None, description="Model id clients must send; none: the config's name.")


class ReplicaSettings(BaseModel):
    """How ``mmgraph serve --ray`` lays out the model replicas under Ray Serve (docs/serving.md, "Several
    replicas"); every replica serves the same app with the same :class:`ServerSettings`."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(2, ge=1, description="Model replicas behind Ray Serve's HTTP proxy (with --ray).")
    replica_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each replica (with --ray).")
    replica_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves for each replica (with --ray).")
