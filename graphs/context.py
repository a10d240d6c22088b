"""The runtime context: what nodes need but state must not hold (models, stores, caches, cancel flag)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from core.artifacts import ArtifactStore


class TensorCache:
    """A small thread-safe LRU of in-process objects (encoder features, signal groups), keyed by strings."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)


@dataclass(kw_only=True)
class RunContext:
    """Passed as ``context=`` to every graph run (LangGraph ``context_schema``)."""

    system: Any = field(metadata={"description": "The loaded MMSystem (encoders, projectors, LLM, generators)."})
    store: ArtifactStore = field(metadata={"description": "Where input and output media live."})
    features: TensorCache = field(
        default_factory=TensorCache, metadata={"description": "Frozen-encoder features by artifact and encoder."}
    )
    scratch: TensorCache = field(
        default_factory=lambda: TensorCache(64),
        metadata={"description": "Run-scoped tensors handed between nodes (signal states)."},
    )
    cancel: threading.Event = field(
        default_factory=threading.Event, metadata={"description": "Set to stop generation cooperatively."}
    )
