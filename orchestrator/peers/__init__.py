"""Published MM-LLMs in their Hugging Face layout, imported as mmgraph systems.

A checkpoint folder of one of the peers below (``config.json`` names its class in ``architectures``) becomes the
equivalent :class:`~core.config.SystemConfig` -- the same LLM, encoder, input projector and, for the cross-attention
family, blocks, with the peer's own weights and chat template -- and loads through the ordinary
:meth:`MMSystem.from_config <orchestrator.system.MMSystem.from_config>`. Its answers are the Hugging Face model's
own, logit for logit (tests/test_peers.py builds a tiny random instance of each class, saves it and checks). Signal
tokens, output projectors and generators can then be attached to make it any-to-any (``mmgraph attach``).

:data:`PEERS` maps a transformers class name to its importer (:class:`~orchestrator.peers.base.Peer`); out-of-tree
importers register under the ``mmgraph.peers`` entry-point group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config import SystemConfig
from core.errors import ConfigError
from core.hub import resolve_model
from core.registry import Registry

PEERS: Registry[Any] = Registry(
    "peer checkpoint",
    "mmgraph.peers",
    {
        "LlavaForConditionalGeneration": "orchestrator.peers.llava:Llava",
        "LlavaNextForConditionalGeneration": "orchestrator.peers.llava:LlavaNext",
        "Blip2ForConditionalGeneration": "orchestrator.peers.blip2:Blip2",
        "InstructBlipForConditionalGeneration": "orchestrator.peers.blip2:InstructBlip",
        "MllamaForConditionalGeneration": "orchestrator.peers.mllama:Mllama",
    },
)


def architecture(path: str | Path) -> str | None:
    """The transformers class a checkpoint folder was saved from (``config.json``'s ``architectures[0]``), or None
    when the folder holds no such config."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        names = json.loads(config.read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config}: not readable JSON: {exc}") from exc
    return str(names[0]) if names else None


def open_peer(path: str, seed: int = 0, *, freeze: bool = True) -> Any:
    """The importer of the checkpoint at ``path`` (a folder, or ``@tiny/<peer>``); a clear error for any other
    class. ``freeze``: the imported projectors and blocks stay frozen."""
    folder = resolve_model(path, seed)
    arch = architecture(folder)
    if arch is None:
        raise ConfigError(f"{path}: no config.json naming a model class; is it a Hugging Face checkpoint folder?")
    if arch not in PEERS:
        raise ConfigError(
            f"{path} is a {arch} checkpoint, which mmgraph cannot import; supported: {', '.join(PEERS.kinds())}"
        )
    return PEERS.get(arch)(path, folder, freeze=freeze)


def import_config(path: str, seed: int = 0) -> SystemConfig:
    """The mmgraph system equivalent to the peer checkpoint at ``path`` (see :func:`open_peer`)."""
    config: SystemConfig = open_peer(path, seed).system_config()
    return config


__all__ = ["PEERS", "architecture", "import_config", "open_peer"]
