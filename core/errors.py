"""Typed errors raised before any model runs, so callers (CLI, server) can map them to clear messages."""

from __future__ import annotations


class MMGraphError(Exception):
    """Base class of every error mmgraph raises on purpose."""


class ConfigError(MMGraphError, ValueError):
    """A SystemConfig, preset or weights directory is inconsistent."""


class MediaError(MMGraphError, ValueError):
    """An input medium was refused. ``code`` is a stable machine-readable reason."""

    code = "invalid_media"

    def __init__(self, message: str, *, modality: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.modality = modality
        if code is not None:
            self.code = code


class InvalidMediaError(MediaError):
    """Bytes that are not a decodable medium of the claimed kind (corrupt, truncated, wrong format)."""

    code = "invalid_media"


class MediaTooLargeError(MediaError):
    """A medium over a configured limit (bytes, pixels, duration, frames)."""

    code = "media_too_large"


class MediaTooSmallError(MediaError):
    """A medium under a configured minimum (e.g. a 1x1 image, an empty clip, a video with no frames)."""

    code = "media_too_small"


class UnsupportedModalityError(MMGraphError, ValueError):
    """A request used an input modality or asked for an output generator the system does not have."""


class PromptError(MMGraphError, ValueError):
    """Placeholder / feature counts disagree, or the prompt exceeds the model's context."""


class CancelledError(MMGraphError):
    """Generation was cancelled cooperatively."""
