"""The chat-assistant backend: an OpenAI-compatible HTTP API and a web chat page (``mmgraph serve``).

>>> from orchestrator.server import create_app, ServerSettings
>>> app = create_app(config="tiny-world", db="threads.sqlite", settings=ServerSettings(queue_size=4))
>>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from orchestrator.server.app import create_app
from orchestrator.server.settings import ServerSettings

__all__ = ["create_app", "ServerSettings"]
