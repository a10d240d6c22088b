"""mmgraph runtime core: configuration, the LLM backbone, the composite system and the Python API.

Heavy imports are lazy, so ``import orchestrator`` stays cheap and the sibling packages (modalities,
generators, graphs) can import ``orchestrator.*`` submodules without cycles.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Assistant", "Reply", "MMSystem", "SystemConfig", "load_config"]

_LAZY = {
    "Assistant": "orchestrator.assistant",
    "Reply": "orchestrator.assistant",
    "MMSystem": "orchestrator.system",
    "SystemConfig": "orchestrator.config",
    "load_config": "orchestrator.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
