"""Where models and mmgraph's own files live: model names -> local folders, cache keys, and the home folder.

A ``model`` field of a config is one of

- a Hugging Face id or a local path: returned unchanged; ``from_pretrained`` loads it;
- ``@tiny/<name>``: a tiny random-weight component (the tests' and the ``tiny-random`` preset's). Nothing can be
  downloaded at run time, so :func:`resolve_model` builds it on first use, seeded, with the builder
  :data:`TINY_BUILDERS` names (every builder lives in :mod:`orchestrator.tiny`), into a cache folder; the
  caller then loads that folder through the ordinary ``from_pretrained(path)`` code, the very code path a real
  Hugging Face id takes;
- ``@tinyworld/<name>``: a component of the trained tiny world that ships inside the package
  (``tinyworld/weights/<name>``, or ``$MMGRAPH_TINYWORLD/<name>``).

A builder is ``build(path: Path, seed: int)``; the registry's targets are ``"module:function"`` strings, resolved
when a component is first built, so naming a tiny component never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.errors import ConfigError
from core.registry import Registry

TINY_PREFIX = "@tiny/"
TINY_VERSION = "1"  # bump when a builder changes, so stale caches are not reused

TINY_BUILDERS: Registry[Callable[[Path, int], None]] = Registry(
    "tiny component",
    None,
    {
        "llama": "orchestrator.tiny:build_llama",
        "qwen2": "orchestrator.tiny:build_qwen2",
        "gpt2": "orchestrator.tiny:build_gpt2",
        "clip-vision": "orchestrator.tiny:build_clip_vision",
        "siglip-vision": "orchestrator.tiny:build_siglip_vision",
        "whisper-encoder": "orchestrator.tiny:build_whisper_encoder",
        "stable-diffusion": "orchestrator.tiny:build_stable_diffusion",
        "text-to-video-sd": "orchestrator.tiny:build_text_to_video_sd",
        "animatediff": "orchestrator.tiny:build_animatediff",
        "audioldm2": "orchestrator.tiny:build_audioldm2",
        "mel-diffusion": "orchestrator.tiny:build_mel_diffusion",
        "llava": "orchestrator.tiny:build_llava",
        "llava-next": "orchestrator.tiny:build_llava_next",
        "mllama": "orchestrator.tiny:build_mllama",
        "blip2": "orchestrator.tiny:build_blip2",
        "instructblip": "orchestrator.tiny:build_instructblip",
    },
)


def default_home() -> Path:
    """Where threads, artifacts and feature caches live unless told otherwise (``$MMGRAPH_HOME`` or ``~/.mmgraph``)."""
    return Path(os.environ.get("MMGRAPH_HOME", Path.home() / ".mmgraph"))


def cache_root() -> Path:
    """Where built tiny components are kept (``$MMGRAPH_CACHE`` or ``~/.cache/mmgraph``)."""
    return Path(os.environ.get("MMGRAPH_CACHE", Path.home() / ".cache" / "mmgraph"))


def is_tiny(model: str) -> bool:
    return model.startswith(TINY_PREFIX)


#: ``@tinyworld/<name>``: a component of the trained tinyworld system that ships inside the package
#: (``tinyworld/weights/<name>``); ``$MMGRAPH_TINYWORLD`` points the prefix at another folder (e.g. a recipe run).
WORLD_PREFIX = "@tinyworld/"


#: where the package keeps the trained tinyworld components (``mmgraph train world --ship`` writes them here)
PACKAGED_WORLD_WEIGHTS = Path(__file__).resolve().parent.parent / "tinyworld" / "weights"


def world_weights() -> Path:
    """The folder ``@tinyworld/<name>`` components resolve in."""
    override = os.environ.get("MMGRAPH_TINYWORLD")
    if override:
        return Path(override)
    return PACKAGED_WORLD_WEIGHTS


def _resolve_world(model: str) -> str:
    path = world_weights() / model[len(WORLD_PREFIX) :]
    if not path.exists():
        raise ConfigError(
            f"{model}: no trained tinyworld component at {path}; train one with "
            "`mmgraph train world --out DIR` and set MMGRAPH_TINYWORLD=DIR/weights"
        )
    return str(path)


def model_identity(model: str, seed: int = 0) -> str:
    """What identifies a model's weights in cache keys: ``@tiny/x#seedN`` for tiny components, the hub id for
    hub models, and for local folders (``@tinyworld/`` ones included) the name plus a content fingerprint of its
    weight files (name, size, the first and last 64 KiB), so retrained weights never reuse stale caches."""
    if is_tiny(model):
        return f"{model}#seed{seed}"
    path = Path(_resolve_world(model) if model.startswith(WORLD_PREFIX) else model)
    if not path.exists():
        return model
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 16))
            handle.seek(max(size - (1 << 16), 0))
            digest.update(handle.read(1 << 16))
    return f"{model}#{digest.hexdigest()[:16]}"


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".json", ".model", ".txt"}


def resolve_model(model: str, seed: int = 0) -> str:
    """Map ``@tiny/<name>`` to a built local folder and ``@tinyworld/<name>`` to the packaged one; return any
    other id or path unchanged."""
    if model.startswith(WORLD_PREFIX):
        return _resolve_world(model)
    if not is_tiny(model):
        return model
    name = model[len(TINY_PREFIX) :]
    builder = TINY_BUILDERS.get(name)
    target = cache_root() / "tiny" / f"{name}-v{TINY_VERSION}-seed{seed}"
    if (target / ".complete").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temporary sibling and rename, so concurrent processes never see half a folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        builder(tmp, seed)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
