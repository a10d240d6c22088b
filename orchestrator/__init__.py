"""mmgraph runtime core: configuration, the LLM backbone, the composite system and the Python API.

Heavy imports are lazy, so ``import orchestrator`` stays cheap and the sibling packages (modalities,
generators, graphs) can import ``orchestrator.*`` submodules without cycles.
"""

from __future__ import annotations

from core.registry import lazy_exports

__all__ = ["Assistant", "Reply", "MMSystem", "SystemConfig", "load_config"]

_LAZY = {
    "Assistant": "orchestrator.assistant",
    "Reply": "orchestrator.assistant",
    "MMSystem": "orchestrator.system",
    "SystemConfig": "core.config",
    "load_config": "core.config",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
