"""The chat-assistant backend: an OpenAI-compatible HTTP API and a web chat page (``mmgraph serve``).

>>> from serving import create_app, ServerSettings
>>> app = create_app(config="tiny-world", db="threads.sqlite", settings=ServerSettings(queue_size=4))
>>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from serving.app import create_app
from serving.settings import ServerSettings

__all__ = ["create_app", "ServerSettings"]
