"""The chat-assistant backend: an OpenAI-compatible HTTP API and a web chat page (``mmgraph serve``).

>>> from serving import create_app, ServerSettings
>>> app = create_app(config="tiny-world", db="threads.sqlite", settings=ServerSettings(queue_size=4))
>>> # uvicorn.run(app, host="127.0.0.1", port=8000)

Names are served on first use (``core.registry.lazy_exports``), so reading :class:`ServerSettings` (the command
line does, to build its options) does not load the model libraries the app needs.
"""

from core.registry import lazy_exports

__all__ = ["create_app", "ServerSettings"]

__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "serving.app", "ServerSettings": "serving.settings"})
