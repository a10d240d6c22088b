"""Continuous batching: turns of many requests share the models, one LLM forward per decoding step for them all.

Without an engine, a turn runs its model calls itself and turns take the models one at a time. With one
(:meth:`MMSystem.start_engine <orchestrator.system.MMSystem.start_engine>`; ``Assistant(batching=N)``, ``mmgraph
serve``), every model call of every turn is work for one worker thread, and each turn waits on its own future:

* **decoding** -- a reply joins the batch after a prefill of its own prompt, and from then on decodes together with
  every other reply in flight: one forward per step over all of them, each row with its own key/value cache
  (left-padded to a common length, so the rows append at the same column), its own position, its own sampling
  settings, stop conditions, required and allowed generators, and signal groups (:class:`SequenceDecoder
  <orchestrator.backbone.SequenceDecoder>` owns those rules, whether a reply decodes alone or in a batch). Rows
  join and leave between steps; a cancelled reply leaves at the next step and the others carry on;
* **encoding** -- the media waiting at the same moment go through their encoder in one batch per modality;
* **generation** -- on a second worker, so that denoising never stalls the decoding batch. Images (and mel
  spectrograms), whose Stable Diffusion loop the tools run step by step (:mod:`generators.stepping`), denoise in a
  batch that media join and leave between steps: one UNet call per step for all of them, each at its own timestep,
  guidance and seed. Other generators' calls waiting at the same moment whose settings agree (generator, steps,
  guidance) run as one batched pipeline call, each sample with its own seed; the rest run alone.

One request's failure is delivered to that request's future only; a batched encoder or generator call that fails is
retried item by item, so the bad item fails alone. Both fusions batch: for cross-attention each row keeps its media
context from its prefill, and the batch's steps read the rows' contexts merged (``Fusion.batched``; the blocks'
media keys and values are computed again when rows join or leave, not at every step).
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from core.errors import CancelledError
from generators.stepping import DenoisingJob, SteppedDenoising
from orchestrator import decoding
from orchestrator.backbone import GenerationResult, SequenceDecoder

if TYPE_CHECKING:  # pragma: no cover - typing only
    from generators import GeneratedMedia
    from orchestrator.backbone import SignalGroup

#: the system the engine serves (an :class:`orchestrator.system.MMSystem`, which imports this module): its encode,
#: media, instructions, prompt, fusion, backbone, device, respond_now, generate_now and generate_many
System = Any

log = logging.getLogger(__name__)


@dataclass
class _Work:
    """One item of work for the worker: what to do, its arguments, and the future its caller waits on."""

    kind: str  # "encode" | "decode" | "generate" | "call"
    args: dict[str, Any]
    future: Future[Any] = field(default_factory=Future)


@dataclass
class _Row:
    """A reply in the decoding batch: its decoder, the token it proposed and that token's input embedding."""

    work: _Work
    decoder: SequenceDecoder
    prompt_tokens: int
    length: int  # positions it has in the cache (its next position id)
    state: Any = None  # what the fusion keeps for this row (cross-attention: its media context)
    token: int = 0
    embed: torch.Tensor | None = None  # (D,)


class Engine:
    """The worker that runs every model call of the turns submitted to it (see the module docstring)."""

    def __init__(self, system: System, *, max_batch: int = 16, threads: int | None = None) -> None:
        """``threads``: torch's intra-op threads on a CPU (default: half the cores, at least one), since the two workers
        -- decoding and generation -- compute at the same time; torch's default, every core for each, oversubscribes
        them (on 2 cores, one thread each served twice the turns per second of two each, with the tiny world)."""
        self.system = system
        self.max_batch = max(1, int(max_batch))
        if system.device.type == "cpu":
            torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))
        self._inbox: queue.Queue[_Work | None] = queue.Queue()
        self._rows: list[_Row] = []
        self._waiting: list[_Work] = []  # decodes not yet admitted (the batch was full)
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, T) 1 on real positions, 0 on left padding
        self._fusion_state: Any = None  # the rows' fusion states merged (fusion.batched), remade when rows change
        self._rows_changed = True
        self.stats = {
            "steps": 0,
            "rows": 0,
            "most_rows": 0,
            "encode_batches": 0,
            "generate_batches": 0,
            "denoise_steps": 0,
            "denoised": 0,
        }
        self._generations: queue.Queue[_Work | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="mmgraph-engine", daemon=True)
        self._generator_thread = threading.Thread(target=self._generate_loop, name="mmgraph-generators", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()
        self._generator_thread.start()

    # -- what turns call (from their own threads) ------------------------------------------------------------------
    def in_worker(self) -> bool:
        return threading.current_thread() in (self._thread, self._generator_thread)

    def encode(self, modality: str, items: list[Any]) -> torch.Tensor:
        """Decoded media -> encoder features (B, G, T, D_enc), batched with other turns' media of ``modality``."""
        features: torch.Tensor = self._submit("encode", modality=modality, items=items)
        return features

    def respond(self, conversation: Sequence[Any], features: dict[str, torch.Tensor], options: dict[str, Any]) -> Any:
        """A turn's reply, decoded in the batch (:meth:`MMSystem.respond` with the same arguments; ``on_text`` runs
        in the caller's context)."""
        options = {**options, "on_text": in_caller_context(options.get("on_text"))}
        return self._submit("decode", conversation=conversation, features=features, options=options)

    def generate(self, name: str, group: SignalGroup, settings: dict[str, Any]) -> GeneratedMedia:
        """One generator call, batched with other turns' calls of the same generator and settings (``progress`` runs
        in the caller's context)."""
        settings = {**settings, "progress": in_caller_context(settings.get("progress"))}
        media: GeneratedMedia = self._submit("generate", name=name, group=group, settings=settings)
        return media

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker (model work that does not batch)."""
        return self._submit("call", fn=fn)

    def close(self) -> None:
        """Stop the workers after the work in hand; later calls raise."""
        self._stopped.set()
        self._inbox.put(None)
        self._generations.put(None)
        self._thread.join(timeout=30)
        self._generator_thread.join(timeout=30)

    def _submit(self, kind: str, **args: Any) -> Any:
        if self._stopped.is_set():
            raise RuntimeError("the engine is closed")
        work = _Work(kind, args)
        (self._generations if kind == "generate" else self._inbox).put(work)
        return work.future.result()

    # -- the worker --------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            works = self._take(self._inbox, block=not self._rows and not self._waiting)
            if works is None:
                break
            by_kind: dict[str, list[_Work]] = {}
            for work in works:
                by_kind.setdefault(work.kind, []).append(work)
            for work in by_kind.get("call", []):
                self._run_alone(work, lambda w: w.args["fn"]())
            self._encode(by_kind.get("encode", []))
            self._waiting += by_kind.get("decode", [])
            self._admit()
            if self._rows:
                self._step()
        for work in self._waiting + [row.work for row in self._rows]:
            if not work.future.done():
                work.future.set_exception(RuntimeError("the engine was closed"))

    def _generate_loop(self) -> None:
        denoising: list[tuple[_Work, Any, DenoisingJob]] = []  # media of stepped tools in flight: work, tool, job
        while (works := self._take(self._generations, block=not denoising)) is not None:
            calls = []
            for work in works:
                try:
                    tool = self.system.generator(work.args["name"])
                    if isinstance(tool, SteppedDenoising):  # joins the running batch at the next step
                        job = self.system.start_denoising(
                            work.args["name"], work.args["group"], **work.args["settings"]
                        )
                        denoising.append((work, tool, job))
                    else:
                        calls.append(work)
                except BaseException as exc:  # noqa: BLE001 - this request only
                    work.future.set_exception(exc)
            self._generate(calls)
            denoising = self._denoise(denoising)
        for work in [w for w, _, _ in denoising]:
            work.future.set_exception(RuntimeError("the engine was closed"))
        while True:  # closed: fail what still waits
            try:
                item = self._generations.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(RuntimeError("the engine was closed"))

    def _denoise(self, denoising: list[tuple[_Work, Any, DenoisingJob]]) -> list[tuple[_Work, Any, DenoisingJob]]:
        """One denoising step for every medium in flight (one UNet call per generator); the finished ones are decoded
        and delivered, the cancelled ones dropped. Returns those still in flight."""
        by_tool: dict[int, list[tuple[_Work, Any, DenoisingJob]]] = {}
        for item in denoising:
            work, _, job = item
            if job.cancel is not None and job.cancel.is_set():
                work.future.set_exception(CancelledError(f"{work.args['name']} generation cancelled"))
                continue
            by_tool.setdefault(id(item[1]), []).append(item)
        left = []
        for group in by_tool.values():
            tool = group[0][1]
            try:
                tool.step([job for _, _, job in group])
            except BaseException as exc:  # noqa: BLE001 - the batch's step failed: its members fail
                for work, _, _ in group:
                    work.future.set_exception(exc)
                continue
            self.stats["denoise_steps"] += 1
            self.stats["denoised"] += len(group)
            for work, tool, job in group:
                if not job.done:
                    left.append((work, tool, job))
                    continue
                try:
                    work.future.set_result(tool.finish(job))
                except BaseException as exc:  # noqa: BLE001 - this medium only
                    work.future.set_exception(exc)
        return left

    @staticmethod
    def _take(inbox: queue.Queue[_Work | None], *, block: bool) -> list[_Work] | None:
        """All the work waiting now (waiting for some if ``block``); None once closed."""
        works: list[_Work] = []
        try:
            item = inbox.get(block=block)
            while True:
                if item is None:
                    return None
                works.append(item)
                item = inbox.get_nowait()
        except queue.Empty:
            return works

    @staticmethod
    def _run_alone(work: _Work, fn: Callable[[_Work], Any]) -> None:
        try:
            work.future.set_result(fn(work))
        except BaseException as exc:  # noqa: BLE001 - delivered to this caller only; the worker lives on
            work.future.set_exception(exc)

    # -- encoding: one batch per modality ------------------------------------------------------------------------------
    def _encode(self, works: list[_Work]) -> None:
        by_modality: dict[str, list[_Work]] = {}
        for work in works:
            by_modality.setdefault(work.args["modality"], []).append(work)
        for modality, group in by_modality.items():
            items = [item for work in group for item in work.args["items"]]
            try:
                features = self.system.encode(modality, items)  # (sum B, G, T, D_enc)
            except BaseException:  # noqa: BLE001 - find the item that fails: each alone
                for work in group:
                    self._run_alone(work, lambda w: self.system.encode(w.args["modality"], w.args["items"]))
                continue
            self.stats["encode_batches"] += 1
            for work, part in zip(group, features.split([len(w.args["items"]) for w in group]), strict=True):
                work.future.set_result(part)

    # -- generation: one batched diffusion call per generator and settings -------------------------------------------
    def _generate(self, works: list[_Work]) -> None:
        by_settings: dict[tuple[Any, ...], list[_Work]] = {}
        for work in works:
            settings = work.args["settings"]
            key = (work.args["name"], settings.get("num_inference_steps"), settings.get("guidance_scale"))
            by_settings.setdefault(key, []).append(work)
        for group in by_settings.values():
            if len(group) > 1:
                try:
                    results = self.system.generate_many(
                        group[0].args["name"],
                        [w.args["group"] for w in group],
                        **_batch_settings([w.args["settings"] for w in group]),
                    )
                except BaseException:  # noqa: BLE001 - each alone, so only the failing one fails
                    results = None
                if results is not None:
                    self.stats["generate_batches"] += 1
                    for work, result in zip(group, results, strict=True):
                        if isinstance(result, BaseException):
                            work.future.set_exception(result)
                        else:
                            work.future.set_result(result)
                    continue
            for work in group:
                self._run_alone(
                    work, lambda w: self.system.generate_now(w.args["name"], w.args["group"], **w.args["settings"])
                )

    # -- decoding: the batch -----------------------------------------------------------------------------------
    def _admit(self) -> None:
        """Prefill waiting replies (each alone) and let them join the batch, up to ``max_batch`` rows."""
        while self._waiting and len(self._rows) < self.max_batch:
            work = self._waiting.pop(0)
            try:
                self._join(work)
            except BaseException as exc:  # noqa: BLE001 - this reply only
                work.future.set_exception(exc)

    def _join(self, work: _Work) -> None:
        system = self.system
        conversation, features, options = work.args["conversation"], work.args["features"], work.args["options"]
        if not _batchable(system):
            work.future.set_result(system.respond_now(conversation, features, **options))  # decodes alone
            return
        backbone = system.backbone
        media = system.media(features, system.instructions(conversation))
        ids = torch.tensor([system.prompt(conversation, media).input_ids], device=system.device)  # (1, L)
        options = {k: v for k, v in options.items() if k != "cache"}
        decoder = SequenceDecoder(backbone, **options)
        embeds, state = system.fusion.prepare(backbone, ids, media)
        cache = DynamicCache()
        with system.fusion.active(state):  # what the cross-attention blocks read (a splice: nothing)
            out = backbone.model(
                inputs_embeds=embeds,
                **{decoding.cache_argument(backbone.model): cache},
                use_cache=True,
                logits_to_keep=1,
            )
        row = _Row(work, decoder, prompt_tokens=ids.shape[1], length=ids.shape[1], state=state)
        if not self._propose(row, out.logits[0, -1].float()):
            return
        self._add_to_batch(row, cache)

    def _propose(self, row: _Row, logits: torch.Tensor | None) -> bool:
        """The row's next token; False (and its future resolved) when its reply is over."""
        try:
            token = row.decoder.propose(logits)
        except BaseException as exc:  # noqa: BLE001 - e.g. an on_text callback that raised: this reply only
            row.work.future.set_exception(exc)
            return False
        if token is None:
            result: GenerationResult = row.decoder.result(row.prompt_tokens)
            if result.finish_reason == "cancelled":
                log.debug("a reply was cancelled after %d tokens", result.completion_tokens)
            row.work.future.set_result(result)
            return False
        row.token = token
        embed_tokens = self.system.backbone.model.get_input_embeddings()
        row.embed = embed_tokens(torch.tensor([token], device=self.system.device))[0]  # (D,)
        return True

    def _add_to_batch(self, row: _Row, cache: DynamicCache) -> None:
        """Append ``row`` with its own cache (1, H, L, hd per layer) to the batch, left-padding whichever is shorter."""
        length = row.length
        if self._cache is None:
            self._cache, self._mask = cache, torch.ones(1, length, dtype=torch.long, device=self.system.device)
            self._rows = [row]
            self._rows_changed = True
            return
        assert self._mask is not None
        width = self._mask.shape[1]
        total = max(width, length)
        for ours, theirs in zip(_layers(self._cache), _layers(cache), strict=True):
            ours.keys = torch.cat([_pad_left(ours.keys, total), _pad_left(theirs.keys, total)])
            ours.values = torch.cat([_pad_left(ours.values, total), _pad_left(theirs.values, total)])
        new_mask = torch.ones(1, length, dtype=torch.long, device=self._mask.device)
        self._mask = torch.cat([_pad_left(self._mask, total, dim=1), _pad_left(new_mask, total, dim=1)])
        self._rows.append(row)
        self._rows_changed = True
        self.stats["most_rows"] = max(self.stats["most_rows"], len(self._rows))

    def _step(self) -> None:
        """One forward over every row that needs one; rows whose reply ends leave the batch."""
        model = self.system.backbone.model
        keep = []
        for i, row in enumerate(self._rows):  # a token the LLM need not read ends its reply here
            if row.decoder.wants_forward():
                keep.append(i)
            else:
                row.decoder.record(row.token, row.embed, None)  # type: ignore[arg-type]
                self._propose(row, None)
        self._select(keep)
        if not self._rows:
            return
        assert self._cache is not None and self._mask is not None
        embeds = torch.stack([row.embed for row in self._rows]).unsqueeze(1)  # type: ignore[misc] # (B, 1, D)
        self._mask = F.pad(self._mask, (0, 1), value=1)  # (B, T + 1)
        positions = torch.tensor([[row.length] for row in self._rows], device=self._mask.device)  # (B, 1)
        fusion = self.system.fusion
        if self._rows_changed:  # cross-attention: the rows' media, keys and values laid out for this batch
            self._fusion_state = fusion.batched([row.state for row in self._rows])
            self._rows_changed = False
        with torch.no_grad(), fusion.active(self._fusion_state):
            out = model(
                inputs_embeds=embeds,
                attention_mask=self._mask,
                position_ids=positions,
                **{decoding.cache_argument(model): self._cache},
                use_cache=True,
                output_hidden_states=True,
                logits_to_keep=1,
            )
        logits = out.logits[:, -1].float()  # (B, V)
        hidden = out.hidden_states[-1][:, -1]  # (B, D)
        self.stats["steps"] += 1
        self.stats["rows"] += len(self._rows)
        keep = []
        for i, row in enumerate(self._rows):
            row.length += 1
            try:
                row.decoder.record(row.token, row.embed, hidden[i])  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - this reply only
                row.work.future.set_exception(exc)
                continue
            if self._propose(row, logits[i]):
                keep.append(i)
        self._select(keep)

    def _select(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` in the batch (and its cache), dropping columns no row uses any more."""
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        self._rows_changed = True
        if not self._rows:
            self._cache, self._mask = None, None
            return
        assert self._cache is not None and self._mask is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        start = int((mask.sum(0) > 0).nonzero()[0])  # columns before it are padding in every remaining row
        self._mask = mask[:, start:]
        for layer in _layers(self._cache):
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]


def in_caller_context(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``fn`` wrapped to run, wherever it is called from (the worker), in a copy of the calling thread's context:
    callbacks such as a LangGraph node's stream writer look up their run in context variables."""
    if fn is None:
        return None
    context = contextvars.copy_context()
    return lambda *args, **kwargs: context.run(fn, *args, **kwargs)


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's layers, each with ``keys`` and ``values`` (B, H, T, hd): what the batch pads, joins and selects."""
    return list(cache.layers)


def _pad_left(tensor: torch.Tensor, total: int, dim: int = 2) -> torch.Tensor:
    """Zeros before ``tensor`` along ``dim`` up to ``total`` positions (keys/values: (B, H, T, hd), dim 2)."""
    missing = total - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _batchable(system: System) -> bool:
    """Whether the engine can batch the LLM's cache: full attention in every layer (a sliding-window layer keeps a
    cache of another shape)."""
    config = system.backbone.model.config
    layer_types = getattr(config, "layer_types", None) or []
    return not getattr(config, "use_sliding_window", False) and not any("sliding" in str(t) for t in layer_types)


def _batch_settings(settings: list[dict[str, Any]]) -> dict[str, Any]:
    """The shared settings of a batch of generator calls, and the per-call ones as lists."""
    first = settings[0]
    return {
        "num_inference_steps": first.get("num_inference_steps"),
        "guidance_scale": first.get("guidance_scale"),
        "seeds": [s.get("seed") for s in settings],
        "progress": [s.get("progress") for s in settings],
        "cancels": [s.get("cancel") for s in settings],
    }
