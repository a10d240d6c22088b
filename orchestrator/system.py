"""MMSystem: the composite MM-LLM built from a SystemConfig, reading like the paper.

``decode -> encode (frozen) -> project (trainable) -> fuse (splice, or gated cross-attention) -> LLM -> signal
tokens -> output projector (trainable) -> generator (frozen)``.

The composite forward is written once, here: :meth:`MMSystem.inputs` (project, then the config's fusion --
:mod:`orchestrator.fusion`) feeds both :meth:`MMSystem.forward` (scoring and training: the trainer's objective and
the benchmarks call it) and :meth:`MMSystem.respond` (decoding a reply: the graph's ``reason`` node, and so the
Python API and the server, call it). Only the trainable tensors (input projectors, cross-attention blocks, output
projectors, signal-token rows, LoRA) are saved and loaded, as safetensors, next to the resolved config. A system
imported from a peer's published checkpoint (``config.peer``, :mod:`orchestrator.peers`) takes its LLM, encoders,
input projectors and blocks from that checkpoint, frozen.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from core.artifacts import ArtifactStore
from core.config import GeneratorConfig, SystemConfig, load_config
from core.errors import CancelledError, ConfigError, UnsupportedModalityError
from core.hub import TINY_PREFIX, resolve_model
from core.turns import MediaPart, SignalPart, TextPart, Turn
from generators import GeneratedMedia, GeneratorTool, build_generator, build_output_projector
from modalities import InputProjector, ModalityEncoder, build_encoder, build_projector, decode
from orchestrator.backbone import (
    Backbone,
    GenerationResult,
    Media,
    Prompt,
    PromptTurn,
    Segment,
    Signal,
    SignalGroup,
    Text,
)
from orchestrator.engine import Engine
from orchestrator.fusion import Fusion, Projected, build_fusion
from orchestrator.peers import import_config, open_peer

log = logging.getLogger(__name__)

WEIGHTS_FILE = "trainable.safetensors"
CONFIG_FILE = "system.yaml"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec not in _DTYPES:
        raise ConfigError(f"unknown dtype {spec!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[spec]


def pretrained_config(path: str | Path) -> SystemConfig:
    """The system a folder holds: an mmgraph system folder (``system.yaml``, its ``trainable.safetensors`` becoming
    the config's ``weights``) or a published MM-LLM checkpoint in its Hugging Face layout, imported
    (:func:`orchestrator.peers.import_config`)."""
    folder = Path(resolve_model(str(path)))
    if (folder / CONFIG_FILE).is_file():
        config = load_config(folder / CONFIG_FILE)
        if (folder / WEIGHTS_FILE).is_file():
            config = config.model_copy(update={"weights": str(folder)})
        return config
    if not folder.is_dir():
        raise ConfigError(f"{path}: no such folder")
    return import_config(str(path))


def resolve_config(spec: SystemConfig | str | Path | dict[str, Any] | None) -> SystemConfig:
    """A SystemConfig from anything that names one: a preset, a YAML file, plain data, or a folder (an mmgraph
    system or a peer's checkpoint, :func:`pretrained_config`; ``@tiny/<peer>`` too)."""
    if isinstance(spec, (str, Path)) and (str(spec).startswith(TINY_PREFIX) or Path(spec).is_dir()):
        return pretrained_config(spec)
    return load_config(spec)


def attach(source: SystemConfig | str | Path, generators: dict[str, GeneratorConfig]) -> SystemConfig:
    """``source`` made any-to-any, NExT-GPT style: its LLM gains each generator's signal tokens, and each generator
    comes with an untrained output projector. Everything ``source`` had is kept as it was -- an imported peer's
    projectors and blocks stay frozen -- so its answers do not change; train the new parts with MM PT / MM IT
    (``mmgraph train pt|it``) and save them with :meth:`MMSystem.save_trainable` (``mmgraph attach`` does both
    ends: it writes the system folder)."""
    config = resolve_config(source)
    taken = sorted(set(generators) & set(config.generators))
    if taken:
        raise ConfigError(f"{config.name} already has generators {taken}")
    if not generators:
        raise ConfigError("attach: no generators given")
    data = config.model_dump(mode="json")
    data["generators"] = {**data["generators"], **{k: g.model_dump(mode="json") for k, g in generators.items()}}
    data["name"] = f"{config.name} + {', '.join(generators)}"
    data["weights"] = None  # the new parts are untrained; a saved folder names its own weights when loaded
    return SystemConfig.model_validate(data)


class MMSystem(nn.Module):
    """Encoders, input projectors, backbone, output projectors and generators of one SystemConfig."""

    def __init__(
        self,
        config: SystemConfig,
        *,
        encoders: dict[str, ModalityEncoder],
        input_projectors: nn.ModuleDict,
        backbone: Backbone,
        generators: dict[str, GeneratorTool],
        output_projectors: nn.ModuleDict,
        fusion: Fusion | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        # Encoders and generators are frozen and may be shared between modalities: keep them out of the module
        # tree so state_dict()/parameters() only cover what this system owns and trains.
        self._encoders = encoders
        self._generators = generators
        self.input_projectors = input_projectors
        self.backbone = backbone
        self.fusion = fusion if fusion is not None else build_fusion(config.fusion, backbone)
        self.output_projectors = output_projectors
        self._decoded: dict[str, Any] = {}
        #: trainable groups taken frozen from an imported checkpoint (``config.peer``): not trained, not saved
        self.imported: set[str] = set()
        #: the worker that batches the model calls of concurrent turns (:meth:`start_engine`); None: each turn runs
        #: its calls itself
        self.engine: Engine | None = None

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: SystemConfig | str | Path | None = None,
        *,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        load_generators: bool = True,
        conditioning_only: bool = False,
    ) -> MMSystem:
        """Build the system of ``config`` (a SystemConfig, a preset name, a YAML path, or a folder:
        :func:`pretrained_config`) on ``device``, with its
        trained projectors from ``weights`` (default: the config's ``weights``). ``load_generators=False`` builds
        no generators and no output projectors; ``conditioning_only=True`` loads each generator's text side only
        (:meth:`GeneratorTool.from_config <generators.base.GeneratorTool.from_config>`): enough to train the
        output projectors against their text features, not to generate."""
        config = resolve_config(config)
        dev = resolve_device(str(device) if device is not None else config.device)
        llm_dtype = resolve_dtype(config.llm.dtype, dev)
        frozen_dtype = llm_dtype

        placeholders = {m: config.placeholder(m) for m in config.modalities}
        signals = {g: config.signal_tokens(g) for g in config.generators}
        encoders: dict[str, ModalityEncoder] = {}
        peer, peer_model = None, None
        if config.peer is not None:  # the LLM and the peer's encoders come from its checkpoint, as it loads them
            peer = open_peer(config.peer.path, config.seed, freeze=config.peer.freeze)
            peer_model = peer.load(device=dev, dtype=llm_dtype)
            backbone = Backbone(
                peer.language_model(peer_model),
                peer.tokenizer(),
                placeholders=placeholders,
                signals=signals,
                prompt_format=config.llm.prompt,
            ).to(dev)
            for name, mcfg in config.modalities.items():
                if mcfg.model == config.peer.path:
                    encoders[name] = peer.encoder(peer_model, name, mcfg).to(device=dev, dtype=frozen_dtype).freeze()
        else:
            backbone = Backbone.from_config(
                config.llm, placeholders=placeholders, signals=signals, device=dev, dtype=llm_dtype, seed=config.seed
            )
        for name, mcfg in config.modalities.items():
            if name not in encoders:
                encoders[name] = build_encoder(mcfg, device=dev, dtype=frozen_dtype, seed=config.seed)

        generators: dict[str, GeneratorTool] = {}
        if load_generators:
            for name, gcfg in config.generators.items():
                generators[name] = build_generator(
                    gcfg, device=dev, dtype=frozen_dtype, seed=config.seed, conditioning_only=conditioning_only
                )

        # Trainable parts: seeded, float32 master weights.
        torch.manual_seed(config.seed)
        input_projectors = nn.ModuleDict(
            {
                name: build_projector(encoders[name].hidden_size, backbone.hidden_size, mcfg.projector)
                for name, mcfg in config.modalities.items()
            }
        )
        output_projectors = nn.ModuleDict(
            {
                name: build_output_projector(
                    backbone.hidden_size, gcfg.num_signal_tokens, generators[name].conditioning_specs(), gcfg.projector
                )
                for name, gcfg in config.generators.items()
                if name in generators
            }
        )
        torch.manual_seed(config.seed + 1)
        fusion = build_fusion(config.fusion, backbone)  # cross-attention blocks: seeded, float32 like projectors
        system = cls(
            config,
            encoders=encoders,
            input_projectors=input_projectors.to(dev),
            backbone=backbone,
            generators=generators,
            output_projectors=output_projectors.to(dev),
            fusion=fusion.to(dev),
        )
        if peer is not None:
            system.load_imported(peer.imported_state(peer_model), freeze=peer.freeze)
        if weights is None and config.weights:
            weights = resolve_model(config.weights)
        if weights is not None:
            system.load_trainable(weights)
        system.eval()
        return system

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> MMSystem:
        """An mmgraph system folder or a peer's published checkpoint (:func:`pretrained_config`); ``kwargs`` as for
        :meth:`from_config`."""
        return cls.from_config(pretrained_config(path), **kwargs)

    # -- names ---------------------------------------------------------------------------------------------------
    @property
    def modality_names(self) -> list[str]:
        return list(self.config.modalities)

    @property
    def generator_names(self) -> list[str]:
        return list(self._generators)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def encoder(self, modality: str) -> ModalityEncoder:
        if modality not in self._encoders:
            raise UnsupportedModalityError(f"this system takes no {modality} input")
        return self._encoders[modality]

    def generator(self, name: str) -> GeneratorTool:
        if name not in self._generators:
            raise UnsupportedModalityError(f"this system has no generator {name!r}")
        return self._generators[name]

    def encoder_key(self, modality: str) -> str:
        return self.encoder(modality).cache_key()

    # -- continuous batching -------------------------------------------------------------------------------------
    def start_engine(self, max_batch: int = 16) -> Engine:
        """Route every model call (encode, respond, generate) of every turn through one worker that batches them
        across turns (:mod:`orchestrator.engine`); turns may then run concurrently. Returns the engine."""
        if self.engine is None:
            self.engine = Engine(self, max_batch=max_batch)
        return self.engine

    def stop_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # -- 1. decode -------------------------------------------------------------------------------------------------
    def decode(self, modality: str, data: bytes) -> Any:
        """Bytes -> validated media object, with the system's limits (raises a MediaError subclass)."""
        encoder = self.encoder(modality)
        options = {"num_frames": self.config.modalities[modality].num_frames} if encoder.input_kind == "video" else {}
        return decode(encoder.input_kind, data, self.config.limits, **options)

    def remember_decoded(self, modality: str, artifact_id: str, decoded: Any) -> None:
        """Keep a medium already decoded (and so validated) under its artifact id, so the turn does not decode it
        again (the server validates media before a request is queued)."""
        if len(self._decoded) > 64:
            self._decoded.clear()
        self._decoded[f"{modality}:{artifact_id}"] = decoded

    def decode_cached(self, modality: str, artifact_id: str, store: ArtifactStore) -> Any:
        decoded = self._decoded.get(f"{modality}:{artifact_id}")
        if decoded is None:
            decoded = self.decode(modality, store.get(artifact_id))
            self.remember_decoded(modality, artifact_id, decoded)
        return decoded

    # -- 2. encode (frozen) ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, modality: str, items: list[Any]) -> torch.Tensor:
        """Decoded media -> frozen encoder features (B, G, T, D_enc)."""
        if self.engine is not None and not self.engine.in_worker():
            return self.engine.encode(modality, items)  # batched with other turns' media
        encoder = self.encoder(modality)
        inputs = encoder.preprocess(items)
        param = next(encoder.parameters())
        inputs = {k: v.to(param.device, param.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
        return encoder(**inputs)

    # -- 3. project (trainable) -----------------------------------------------------------------------------------
    def project(self, modality: str, features: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
        """Encoder features (B, G, T, D_enc) -> LLM-space tokens (B, N, D_llm): N = G*M when each group (video
        frame) is projected on its own, M when the projector reads all frames jointly. ``instructions``: the text
        of the turn showing each item, for projectors that read it (InstructBLIP's Q-Former)."""
        projector = cast(InputProjector, self.input_projectors[modality])  # a ModuleDict types its values as Module
        features = features.to(self.device, next(projector.parameters()).dtype)
        return projector.project_groups(features, instructions).to(self.backbone.dtype)  # (B, N, D_llm)

    def slots(self, modality: str) -> int:
        """How many placeholder positions one item of ``modality`` occupies in the prompt: its projected tokens for a
        splice, one for cross-attention."""
        encoder = self.encoder(modality)
        projector = cast(InputProjector, self.input_projectors[modality])
        if not projector.fixed_length:
            raise ConfigError(
                f"a {modality} item's slot count depends on the item ({projector.cfg.kind}): lay its prompt out with "
                "its projected media (prompt(conversation, media))"
            )
        return self.fusion.slots(projector.num_group_tokens(encoder.groups, encoder.tokens_per_group))

    def item_slots(self, media: dict[str, Projected]) -> dict[str, list[int]]:
        """Slot counts of every projected item, per modality in order (items of one modality may differ)."""
        out = {}
        for modality, projected in media.items():
            n, m = projected.tokens.shape[:2]
            counts = [m] * n if projected.mask is None else projected.mask.sum(1).tolist()
            out[modality] = [self.fusion.slots(int(c)) for c in counts]
        return out

    # -- 4. splice -> LLM: the composite forward --------------------------------------------------------------------
    def prompt(
        self,
        conversation: Sequence[Turn],
        media: dict[str, Projected] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> Prompt:
        """A conversation as the LLM reads it: token ids, each input medium expanded to its slot count (from
        ``media``, its projected items, where given: needed when items of a modality differ in length), each medium
        the assistant generated (or a pending signal) as its generator's signal tokens."""
        counts = {m: iter(c) for m, c in self.item_slots(media).items()} if media is not None else {}

        def segment(part: TextPart | MediaPart | SignalPart) -> Segment:
            if isinstance(part, TextPart):
                return Text(part.text)
            if isinstance(part, SignalPart):
                return Signal(part.generator)
            if part.generator is not None:  # a medium the assistant generated
                return Signal(part.generator)
            slots = next(counts[part.modality], None) if part.modality in counts else None
            return Media(part.modality, self.slots(part.modality) if slots is None else slots)

        return self.backbone.build_prompt(
            [PromptTurn(turn.role, [segment(part) for part in turn.parts]) for turn in conversation],
            add_generation_prompt=add_generation_prompt,
        )

    def media(
        self, features: dict[str, torch.Tensor], instructions: dict[str, list[str]] | None = None
    ) -> dict[str, Projected]:
        """Every modality's encoder features (N, G, T, D_enc) -> its projected tokens (N, M, D_llm) and, where the
        projector marks padding (unused image tiles), which of them are real."""
        out = {}
        for modality, x in features.items():
            projector = cast(InputProjector, self.input_projectors[modality])
            texts = (instructions or {}).get(modality)
            out[modality] = Projected(self.project(modality, x, texts), projector.token_mask(x))
        return out

    @staticmethod
    def instructions(conversation: Sequence[Turn]) -> dict[str, list[str]]:
        """For every input medium of the conversation, per modality in order, the text of the turn that shows it
        (what an instruction-aware projector reads)."""
        out: dict[str, list[str]] = {}
        for turn in conversation:
            text = "".join(p.text for p in turn.parts if isinstance(p, TextPart))
            for part in turn.parts:
                if isinstance(part, MediaPart) and part.generator is None:
                    out.setdefault(part.modality, []).append(text)
        return out

    @contextmanager
    def inputs(
        self,
        input_ids: torch.Tensor,
        features: dict[str, torch.Tensor],
        instructions: dict[str, list[str]] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Project every medium's encoder features and let them reach the LLM the config's way: spliced into the
        placeholder slots, or attached to the cross-attention blocks for as long as the context is open.

        Args:
            input_ids: (B, L) ids with each placeholder expanded to its slot count (:meth:`slots`).
            features: modality -> (N, G, T, D_enc) encoder features of that modality's N items in the batch, in
                order of appearance.
            instructions: modality -> the text of the turn showing each item (:meth:`instructions`), for
                instruction-aware projectors.
        Yields:
            (B, L, D_llm) the LLM's input embeddings.
        """
        with self.fusion.inputs(self.backbone, input_ids, self.media(features, instructions)) as embeds:
            yield embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        instructions: dict[str, list[str]] | None = None,
        llm: nn.Module | None = None,
        **llm_kwargs: Any,
    ) -> tuple[Any, torch.Tensor]:
        """The composite forward: encoder features -> project -> fuse -> LLM.

        Args:
            input_ids, features, instructions: as for :meth:`inputs`.
            attention_mask: (B, L) padding mask.
            llm: the LLM to run (default the backbone's; the trainer passes its ``torch.compile`` wrapper).
            llm_kwargs: passed to the LLM (``output_hidden_states``, ``logits_to_keep``, ``use_cache`` ...).
        Returns:
            ``(output, inputs_embeds)``: the LLM's output (``logits``, ``hidden_states``) and the (B, L, D_llm)
            embeddings it read.
        """
        model = llm if llm is not None else self.backbone.model
        with self.inputs(input_ids, features or {}, instructions) as embeds:
            return model(inputs_embeds=embeds, attention_mask=attention_mask, **llm_kwargs), embeds

    @torch.no_grad()
    def respond(
        self, conversation: Sequence[Turn], features: dict[str, torch.Tensor], **options: Any
    ) -> GenerationResult:
        """Decode the assistant's next turn: the same project -> fuse as :meth:`forward`, then the backbone's
        signal-aware decoding loop (``options``: max_new_tokens, min_new_tokens, temperature, top_p, seed, require,
        allow, on_text, cancel; ``cache`` defaults to the config's ``llm.decoding``). With an engine, the reply
        decodes in the batch of every turn in flight, token for token as it would alone."""
        if self.engine is not None and not self.engine.in_worker():
            return cast(GenerationResult, self.engine.respond(conversation, features, options))
        return self.respond_now(conversation, features, **options)

    @torch.no_grad()
    def respond_now(
        self, conversation: Sequence[Turn], features: dict[str, torch.Tensor], **options: Any
    ) -> GenerationResult:
        """:meth:`respond` in this thread, alone."""
        media = self.media(features, self.instructions(conversation))
        prompt = self.prompt(conversation, media)
        input_ids = torch.tensor([prompt.input_ids], device=self.device)  # (1, L)
        options["cache"] = self.decoding_cache(options.get("cache", self.config.llm.decoding))
        with self.fusion.inputs(self.backbone, input_ids, media) as embeds:  # as inputs(), the media projected above
            return self.backbone.generate(embeds, **options)

    def decoding_cache(self, kind: str) -> str:
        """The decoding cache to use: ``auto`` means dynamic for a fusion whose hooks need eager steps."""
        if not self.fusion.eager_only:
            return kind
        if kind in ("graph", "compiled"):
            raise ConfigError(
                f"llm.decoding={kind!r} replays captured steps, but {self.config.fusion.kind} reads the turn's media "
                "at every step; use dynamic or static"
            )
        return "dynamic" if kind == "auto" else kind

    # -- 5. signals -> output projector -> generator --------------------------------------------------------------
    def condition(self, name: str, group: SignalGroup) -> dict[str, torch.Tensor]:
        """Signal hidden states (k, D_llm) -> the generator's conditioning tensors (1, L, D)."""
        projector = self.output_projectors[name]
        dtype = next(projector.parameters()).dtype
        hidden = group.hidden.unsqueeze(0).to(self.device, dtype)  # (1, k, D_llm)
        embeds = group.input_embeds.unsqueeze(0).to(self.device, dtype)  # (1, k, D_llm)
        return projector(hidden, embeds)

    @torch.no_grad()
    def generate(
        self,
        name: str,
        group: SignalGroup,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GeneratedMedia:
        """Run generator ``name`` on one signal group; returns its GeneratedMedia (bytes + mime). With an engine, the
        call is batched with other turns' calls of the same generator and settings."""
        if self.engine is not None and not self.engine.in_worker():
            settings = {
                "num_inference_steps": num_inference_steps,
                "guidance_scale": guidance_scale,
                "seed": seed,
                "progress": progress,
                "cancel": cancel,
            }
            return self.engine.generate(name, group, settings)
        return self.generate_now(
            name,
            group,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seed=seed,
            progress=progress,
            cancel=cancel,
        )

    @torch.no_grad()
    def generate_now(
        self,
        name: str,
        group: SignalGroup,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GeneratedMedia:
        """:meth:`generate` in this thread, alone."""
        tool = self.generator(name)
        conditioning = self.condition(name, group)

        def on_step(step: int, total: int) -> None:
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"{name} generation cancelled at step {step}/{total}")
            if progress is not None:
                progress(step, total)

        return tool.generate(
            conditioning,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seed=self.config.seed if seed is None else seed,
            progress=on_step,
        )

    @torch.no_grad()
    def start_denoising(
        self,
        name: str,
        group: SignalGroup,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Any:
        """A medium of generator ``name`` (one that denoises step by step, :mod:`generators.stepping`) ready to join a
        running batch: its output projector's conditioning, its noise (from ``seed``), its scheduler."""
        tool = cast(Any, self.generator(name))
        return tool.start(
            self.condition(name, group),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seed=self.config.seed if seed is None else seed,
            progress=progress,
            cancel=cancel,
        )

    @torch.no_grad()
    def generate_many(
        self,
        name: str,
        groups: Sequence[SignalGroup],
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seeds: Sequence[int | None],
        progress: Sequence[Callable[[int, int], None] | None],
        cancels: Sequence[threading.Event | None],
    ) -> list[GeneratedMedia | BaseException]:
        """Generator ``name`` on several signal groups in one batched call, each with its own seed (noise), progress
        and cancel flag; a cancelled one comes back as a CancelledError, the others as their media."""
        tool = self.generator(name)
        conditionings = [self.condition(name, group) for group in groups]
        stopped = [False] * len(groups)

        def report(i: int) -> Callable[[int, int], None]:
            def on_step(step: int, total: int) -> None:
                flag = cancels[i]
                if flag is not None and flag.is_set():
                    stopped[i] = True
                elif progress[i] is not None:
                    progress[i](step, total)  # type: ignore[misc]

            return on_step

        results = tool.generate_many(
            conditionings,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seeds=[self.config.seed if s is None else s for s in seeds],
            progress=[report(i) for i in range(len(groups))],
        )
        return [
            CancelledError(f"{name} generation cancelled") if stopped[i] else result for i, result in enumerate(results)
        ]

    # -- trainable weights ----------------------------------------------------------------------------------------
    def trainable_modules(self) -> dict[str, nn.Module]:
        """The trained parts with their own modules, by group name (``input_projectors.image``, ``fusion``,
        ``output_projectors.image``), less the ones imported frozen from a peer's checkpoint."""
        groups: dict[str, nn.Module] = {f"input_projectors.{m}": p for m, p in self.input_projectors.items()}
        if any(True for _ in self.fusion.parameters()):
            groups["fusion"] = self.fusion
        groups.update({f"output_projectors.{g}": p for g, p in self.output_projectors.items()})
        return {name: module for name, module in groups.items() if name not in self.imported}

    def load_imported(self, state: dict[str, torch.Tensor], *, freeze: bool = True) -> None:
        """Load a peer checkpoint's projector and block tensors (keys as :meth:`trainable_state_dict`'s) into their
        modules; with ``freeze`` those modules stop training and are left out of saved weights (they load from the
        peer's checkpoint again)."""
        modules = self.trainable_modules()
        for group, module in modules.items():
            part = {k[len(group) + 1 :]: v for k, v in state.items() if k.startswith(group + ".")}
            if not part:
                continue
            try:
                module.load_state_dict(part)
            except RuntimeError as exc:
                raise ConfigError(f"the imported {group} does not fit its mmgraph module: {exc}") from exc
            if freeze:
                module.requires_grad_(False)
                self.imported.add(group)
        taken = {k for k in state for g in modules if k.startswith(g + ".")}
        if taken != set(state):
            raise ConfigError(f"imported tensors with no module to take them: {sorted(set(state) - taken)[:3]}")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            f"{group}.{k}": v
            for group, module in self.trainable_modules().items()
            for k, v in module.state_dict().items()
        }
        state.update({f"signal_rows.{k}": v for k, v in self.backbone.signal_rows_state().items()})
        state.update({f"lora.{k}": v for k, v in self.backbone.lora_state().items()})
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}  # a snapshot

    def save_trainable(self, directory: str | Path) -> Path:
        """Write ``trainable.safetensors`` and the resolved ``system.yaml`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # LoRA settings travel in the file's metadata, so loading can re-create the adapters first.
        metadata = {"lora": json.dumps(self.backbone.lora_settings)} if self.backbone.lora_settings else None
        save_file(self.trainable_state_dict(), str(directory / WEIGHTS_FILE), metadata=metadata)
        self.config.save(directory / CONFIG_FILE)
        return directory

    def load_trainable(self, directory: str | Path) -> None:
        """Load trainable weights saved by :meth:`save_trainable` (safetensors only; never unpickles)."""
        path = Path(directory)
        path = path / WEIGHTS_FILE if path.is_dir() else path
        if not path.exists():
            raise ConfigError(f"no trainable weights at {path}")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
        groups: dict[str, dict[str, torch.Tensor]] = {}
        modules = self.trainable_modules()
        for key, value in state.items():
            parts = key.split(".")
            group = ".".join(parts[:2]) if parts[0].endswith("projectors") else parts[0]  # e.g. input_projectors.image
            groups.setdefault(group, {})[key[len(group) + 1 :]] = value
        not_loaded = {f"output_projectors.{g}" for g in self.config.generators if g not in self._generators}
        unknown = set(groups) - set(modules) - not_loaded - {"signal_rows", "lora"}
        if unknown:
            raise ConfigError(f"{path} holds weights for parts this system does not train: {sorted(unknown)}")
        try:
            for group, module in modules.items():
                module.load_state_dict(groups.get(group, {}))
        except RuntimeError as exc:
            raise ConfigError(f"{path} does not fit this system's projectors: {exc}") from exc
        if "signal_rows" in groups:
            self.backbone.load_signal_rows(groups["signal_rows"])
        if "lora" in groups:
            if self.backbone.lora_settings is None:
                if "lora" not in metadata:
                    raise ConfigError(f"{path} holds LoRA tensors but no LoRA settings in its metadata")
                self.backbone.add_lora(**json.loads(metadata["lora"]))
            self.backbone.load_lora(groups["lora"])
