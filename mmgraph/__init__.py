"""mmgraph: any-to-any multimodal assistants (MM-LLMs) as a LangGraph state machine.

The front door: everything a user types first, re-exported from the rooms that own it
(docs/architecture.md has the map).

>>> from mmgraph import Assistant
>>> bot = Assistant.from_config("tiny-world")
>>> reply = bot.chat("Draw a blue circle.", generate=["image"])
>>> reply.text, reply.artifacts[0].path

Names are imported on first use (PEP 562), as ``transformers`` does: ``import mmgraph`` and ``mmgraph --help``
stay fast, and torch loads only when a model is built.
"""

from __future__ import annotations

from core.registry import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that owns it
_EXPORTS = {
    # the Python API
    "Assistant": "orchestrator.assistant",
    "Reply": "orchestrator.assistant",
    "Event": "orchestrator.assistant",
    # the model
    "MMSystem": "orchestrator.system",
    "Backbone": "orchestrator.backbone",
    # configuration and the turn
    "SystemConfig": "core.config",
    "load_config": "core.config",
    "list_presets": "core.config",
    "MediaLimits": "core.config",
    "ArtifactStore": "core.artifacts",
    "ArtifactRef": "core.artifacts",
    # errors
    "MMGraphError": "core.errors",
    "ConfigError": "core.errors",
    "MediaError": "core.errors",
    "InvalidMediaError": "core.errors",
    "MediaTooLargeError": "core.errors",
    "MediaTooSmallError": "core.errors",
    "UnsupportedModalityError": "core.errors",
    "PromptError": "core.errors",
    # graphs
    "GraphBuilder": "graphs.builder",
    "check_graph": "graphs.check",
    # training
    "train": "training.trainer",
    "Trainer": "training.trainer",
    "TrainConfig": "training.config",
    # serving
    "create_app": "serving.app",
    "ServerSettings": "serving.settings",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
