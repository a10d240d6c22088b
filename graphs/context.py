"""The runtime context: what nodes need but state must not hold (the model, stores, caches, cancel flag).

The graph drives a model it does not import: :class:`Model` is the interface its nodes call, and
:class:`orchestrator.system.MMSystem` implements it. So graphs/ stays wiring (the model is injected per run, as
LangGraph's ``context_schema`` intends), and a test or a plugin can drive the same graph with another model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from core.artifacts import ArtifactStore
from core.config import SystemConfig
from core.turns import Turn


@runtime_checkable
class Model(Protocol):
    """What the graph's nodes call on the system (see :class:`orchestrator.system.MMSystem` for each step)."""

    config: SystemConfig

    @property
    def modality_names(self) -> list[str]: ...

    @property
    def generator_names(self) -> list[str]: ...

    def encoder_key(self, modality: str) -> str:
        """Identifies the encoder's features in caches."""
        ...

    def decode_cached(self, modality: str, artifact_id: str, store: ArtifactStore) -> Any:
        """A stored medium decoded with the system's limits (raises a MediaError)."""
        ...

    def encode(self, modality: str, items: list[Any]) -> torch.Tensor:
        """Decoded media -> frozen encoder features (B, G, T, D_enc)."""
        ...

    def respond(self, conversation: Sequence[Turn], features: dict[str, torch.Tensor], **options: Any) -> Any:
        """The composite forward and decoding loop: the assistant's next turn as text spans and signal groups."""
        ...

    def generate(
        self,
        name: str,
        group: Any,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Any:
        """One signal group -> output projector -> generator -> encoded media (``data``, ``mime``, ``modality``)."""
        ...


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

    system: Model = field(
        metadata={"description": "The loaded model (an MMSystem: encoders, projectors, LLM, generators)."}
    )
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
