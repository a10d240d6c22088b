"""How :meth:`orchestrator.backbone.Backbone.generate` runs the LLM: a prefill over the prompt, then one forward per
new token. Two step runners with one interface:

* :class:`DynamicSteps` -- Hugging Face's ``DynamicCache``, which grows by one column per token (the default on
  CPU, where launching kernels costs little next to the arithmetic);
* :class:`StaticSteps` -- a ``StaticCache`` of fixed length, so the one-token step has the same shapes and the same
  tensor addresses every time. On CUDA it is captured once in a CUDA graph and replayed: the hundreds of kernel
  launches a decoder layer stack costs from Python become one graph launch, which is what keeps batch-1 decoding
  of a 7B model near the memory-bandwidth bound instead of the launch-overhead bound;
* :class:`StaticSteps` with ``compile=True`` -- the one-token step goes through ``torch.compile`` first, so the
  dozens of small elementwise kernels per layer (RMSNorm in float32, rotary embedding, SiLU-gating, residuals) fuse
  into a few, and on CUDA the compiled step is then captured in a CUDA graph as above. At LLaVA-7B's shape on an
  H100 the uncompiled step spends about a third of its time in those small kernels (docs/benchmarks.md); the cost
  is a one-off compilation when the runner is first used.

A runner returns, for every forward, the next-token logits ``(V,)`` (float32) and the last layer's hidden state of
the last position ``(D,)`` -- what the signal tokens hand to the output projectors.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache, StaticCache

from core.config import CacheKind

#: the static kinds and how their runner is built: ``compiled`` is captured in a CUDA graph where there is one
STATIC_KINDS: dict[str, dict[str, bool]] = {
    "static": {"graph": False, "compile": False},
    "graph": {"graph": True, "compile": False},
    "compiled": {"graph": True, "compile": True},
}
#: static caches are allocated in multiples of this many positions, so prompts of similar length share one cache
#: (and one captured graph) instead of allocating per request
BUCKET = 256


def cache_argument(model: Any) -> str:
    """The keyword a Hugging Face model takes its key/value cache by: ``cache`` (transformers 5.25 on; the old name
    goes in 5.40) or ``past_key_values``."""
    kind = type(model)
    if kind not in _CACHE_ARGUMENT:
        _CACHE_ARGUMENT[kind] = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return _CACHE_ARGUMENT[kind]


_CACHE_ARGUMENT: dict[type, str] = {}


class _Steps:
    """What both runners share: one forward of the model over ``self.cache``."""

    model: Any
    cache: Any

    def _forward(self, embeds: torch.Tensor, model: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model if model is None else model  # the step may run a compiled wrapper of the same model
        out = model(
            inputs_embeds=embeds,
            **{cache_argument(self.model): self.cache},
            use_cache=True,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return out.logits[0, -1].float(), out.hidden_states[-1][0, -1]


class DynamicSteps(_Steps):
    """Prefill and steps over a ``DynamicCache``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache = DynamicCache()

    def prefill(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``embeds``: the prompt ``(1, L, D)``."""
        return self._forward(embeds)

    def step(self, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``embed``: one new token ``(1, 1, D)``."""
        return self._forward(embed)


class StaticSteps(_Steps):
    """Prefill and steps over a ``StaticCache`` of ``max_len`` positions; with ``graph=True`` (CUDA only) the step
    is a replayed CUDA graph; with ``compile=True`` the step (not the prefill, whose length varies) runs through
    ``torch.compile`` with fixed shapes, before any capture.

    The cache keeps its own write position (a device tensor it advances in place), so a captured step writes the
    next column and masks the unwritten ones on every replay. :meth:`reset` rewinds it for the next prompt, keeping
    every address, so one runner serves many requests of up to ``max_len`` positions.
    """

    def __init__(self, model: Any, max_len: int, *, graph: bool = False, compile: bool = False) -> None:
        param = next(model.parameters())
        if graph and param.device.type != "cuda":
            raise ValueError(f"CUDA-graph decoding needs the model on a CUDA device, not {param.device}")
        self.model = model
        self.max_len = int(max_len)
        self.cache = StaticCache(config=model.config, max_cache_len=self.max_len)
        self.graph = graph
        # the step's model: compiled for one-token inputs and this cache (the prefill stays eager)
        self._step_model = torch.compile(model, dynamic=False) if compile else model
        hidden = model.get_input_embeddings().weight.shape[1]
        self._embed = torch.zeros(1, 1, hidden, device=param.device, dtype=param.dtype)  # the graph's input slot
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: tuple[torch.Tensor, torch.Tensor] | None = None
        self.used = 0  # positions written since the last reset

    def reset(self) -> None:
        self.cache.reset()
        self.used = 0

    def _capture(self) -> None:
        """Warm up on a side stream (this also allocates the cache) and capture one step; :meth:`prefill` rewinds
        the cache afterwards."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # the first also compiles, where the step is compiled
                self._forward(self._embed, self._step_model)
        torch.cuda.current_stream().wait_stream(stream)
        self.cache.reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self._forward(self._embed, self._step_model)
        self._graph = graph

    def prefill(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph and self._graph is None:
            self._capture()
        self.reset()
        self._reserve(embeds.shape[1])
        return self._forward(embeds)

    def step(self, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._reserve(1)
        if self._graph is None:
            return self._forward(embed, self._step_model)
        self._embed.copy_(embed)
        self._graph.replay()
        assert self._out is not None  # captured with the graph (_capture)
        logits, hidden = self._out
        return logits.clone(), hidden.clone()  # the next replay overwrites the graph's outputs

    def _reserve(self, positions: int) -> None:
        if self.used + positions > self.max_len:
            raise ValueError(
                f"the static cache holds {self.max_len} positions; this forward needs {self.used + positions}"
            )
        self.used += positions


def resolve(kind: CacheKind, device: torch.device) -> str:
    """``auto``: ``graph`` on CUDA, ``dynamic`` elsewhere (``compiled`` is opt-in: it pays a compilation the first
    time a runner is used)."""
    if kind == "auto":
        return "graph" if device.type == "cuda" else "dynamic"
    if kind != "dynamic" and kind not in STATIC_KINDS:
        raise ValueError(f"unknown decoding cache {kind!r}; choose auto, dynamic, {', '.join(STATIC_KINDS)}")
    return kind


def static_steps(kind: str, model: Any, max_len: int) -> StaticSteps:
    """The runner of a static ``kind``; ``compiled`` captures a CUDA graph only on CUDA (on a CPU it is the
    compiled step alone)."""
    options = dict(STATIC_KINDS[kind])
    if options["compile"] and next(model.parameters()).device.type != "cuda":
        options["graph"] = False
    return StaticSteps(model, max_len, **options)


def bucket(length: int) -> int:
    """``length`` rounded up to a multiple of :data:`BUCKET`."""
    return -(-int(length) // BUCKET) * BUCKET
