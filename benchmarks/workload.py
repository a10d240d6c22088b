"""The mixed chat workload that ``mmgraph bench serve`` and the load test (``mmgraph bench load``) send.

Turns cycle through three kinds, each an OpenAI chat-completions body the official client sends as it is:

* ``image question`` -- a PNG of a coloured shape from the tiny world's own renderer, as an ``image_url`` data URL,
  with "What colour is the shape?" (text out only);
* ``text question`` -- "What can you draw?" (text out only);
* ``image generation`` -- "Draw a red circle." (and other colours and shapes) with ``modalities: ["text", "image"]``.

Every image question carries a picture no earlier request of the run sent (``image_seed`` picks the render), so no
request is answered from the server's decoded-media or encoder-feature caches. This module stays light (no torch):
the locust process imports it.
"""

from __future__ import annotations

import base64
from typing import Any

from tinyworld.world import COLOURS, SHAPES, Picture, encode

#: the kinds of turn, in the order requests cycle through them
KINDS = ("image question", "text question", "image generation")
IMAGE_QUESTION = "What colour is the shape?"
TEXT_QUESTION = "What can you draw?"
MODEL = "tiny-world"
#: the name locust counts 429 answers under (benchmarks/locustfile.py)
REFUSED_NAME = "429 queue full"

_COLOURS = tuple(COLOURS)


def turn(index: int, *, image_seed: int, model: str = MODEL) -> tuple[str, dict[str, Any]]:
    """Request ``index`` of the workload: its kind and its chat-completions body. ``index`` picks the kind (cycling
    through :data:`KINDS`), the colour and shape; ``image_seed`` picks the render of an image question's picture."""
    kind = KINDS[index % len(KINDS)]
    colour, shape = _COLOURS[index % len(_COLOURS)], SHAPES[(index // len(_COLOURS)) % len(SHAPES)]
    body: dict[str, Any] = {"model": model, "seed": index}
    if kind == "image question":
        png = encode(Picture(colour=colour, shape=shape, position="centre", size="large"), image_seed)
        url = f"data:image/png;base64,{base64.b64encode(png).decode()}"
        content: Any = [{"type": "text", "text": IMAGE_QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
        body.update(messages=[{"role": "user", "content": content}], modalities=["text"])
    elif kind == "text question":
        body.update(messages=[{"role": "user", "content": TEXT_QUESTION}], modalities=["text"])
    else:
        body.update(messages=[{"role": "user", "content": f"Draw a {colour} {shape}."}], modalities=["text", "image"])
    return kind, body


def problem(kind: str, reply: dict[str, Any]) -> str | None:
    """What is wrong with a chat completion (its JSON) for a turn of ``kind``; ``None`` when it is a whole answer:
    some text, and for an image generation exactly one generated image."""
    try:
        message = reply["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return f"no choices[0].message in the reply: {str(reply)[:200]}"
    media = [p for p in message.get("parts") or [] if p.get("type") != "text"]
    if not (message.get("content") or "").strip():
        return "empty reply text"
    wanted = ["image"] if kind == "image generation" else []
    got = [(p.get("artifact") or {}).get("modality") for p in media]
    if got != wanted:
        return f"{kind}: generated {got}, expected {wanted}"
    return None
