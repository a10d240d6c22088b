"""Frozen diffusion pipelines as tools: the common base of the image, video and audio generators.

A :class:`GeneratorTool` wraps one diffusers pipeline that is driven by *embeddings* instead of a prompt string.
The embeddings ("conditioning") are what the trainable output projector produces from the LLM's signal tokens;
:meth:`GeneratorTool.conditioning_specs` says which tensors, of which shapes, the pipeline needs, and
:meth:`GeneratorTool.encode_text` computes the very same tensors with the pipeline's own text encoder(s) -- the
targets the output projector is aligned to (NExT-GPT / GILL), and the empty-prompt negatives used for
classifier-free guidance (MiniGPT-5).

Everything the three wrappers share lives here once: loading (``@tiny/...`` names included), freezing, dtype and
device placement, shape validation, negatives, seeding, progress callbacks (whatever callback style the pipeline
supports), and the pipeline call. A subclass declares its pipeline class and the few modality-specific hooks:

* :meth:`conditioning_specs` -- the tensors the pipeline is driven by, read from the pipeline's own configs;
* :meth:`_encode_text` -- the pipeline's own text features for prompts;
* :meth:`_encode_output` -- one generated sample -> ``(bytes, mime, metadata)``;
* class attributes: :attr:`call_options` (``cfg.options`` keys passed to the pipeline call),
  :attr:`output_options` (keys used by :meth:`_encode_output`), :attr:`attention_masks`, :attr:`output_type`,
  :attr:`load_kwargs`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import torch

from core.config import GeneratorConfig
from core.hub import model_identity, resolve_model
from generators.registry import GENERATORS

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ConditioningSpec:
    """One tensor a pipeline is driven by: ``name`` (its keyword, e.g. ``prompt_embeds``) of shape ``(B, length, dim)``.

    For Stable Diffusion 1.5 this is ``ConditioningSpec("prompt_embeds", 77, 768)``.
    """

    name: str
    length: int
    dim: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(length, dim)``: the shape of one sample."""
        return (self.length, self.dim)


@dataclass
class GeneratedMedia:
    """Encoded output of one generator call: file bytes, their mime type, the modality, and metadata
    (size, frames, seconds, sample_rate, steps, guidance_scale, seed, ...)."""

    data: bytes
    mime: str
    modality: str
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# progress callbacks: diffusers pipelines expose one of two styles
# ---------------------------------------------------------------------------------------------------------------
def _on_step_end_kwargs(progress: Progress, total: int) -> dict[str, Any]:
    """``callback_on_step_end(pipe, step, timestep, tensors) -> tensors`` (StableDiffusionPipeline and most others)."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        progress(step + 1, total)
        return tensors

    return {"callback_on_step_end": on_step_end}


def _legacy_callback_kwargs(progress: Progress, total: int) -> dict[str, Any]:
    """``callback(step, timestep, latents)`` every ``callback_steps`` (TextToVideoSDPipeline, AudioLDM2Pipeline)."""

    def callback(step: int, timestep: Any, latents: torch.Tensor) -> None:
        progress(step + 1, total)

    return {"callback": callback, "callback_steps": 1}


# Tried in order; the first keyword the pipeline's ``__call__`` accepts wins (the modern style before the old one).
PROGRESS_STYLES: tuple[tuple[str, Callable[[Progress, int], dict[str, Any]]], ...] = (
    ("callback_on_step_end", _on_step_end_kwargs),
    ("callback", _legacy_callback_kwargs),
)


def progress_kwargs(pipeline: Any, progress: Progress | None, total: int) -> dict[str, Any]:
    """Keyword arguments that make ``pipeline(...)`` call ``progress(step, total)`` after each denoising step
    (``step`` counts from 1 to ``total``)."""
    if progress is None:
        return {}
    accepted = inspect.signature(pipeline.__call__).parameters
    for keyword, make in PROGRESS_STYLES:
        if keyword in accepted:
            return make(progress, total)
    raise TypeError(f"{type(pipeline).__name__} accepts no step callback ({', '.join(k for k, _ in PROGRESS_STYLES)})")


def compile_denoiser(pipeline: Any) -> None:
    """Replace ``pipeline.unet`` by its ``torch.compile`` wrapper (the module itself, its weights and config stay
    as they are). On CUDA the mode is ``reduce-overhead``: each denoising step replays a CUDA graph, which is
    what a UNet at batch 2 (classifier-free guidance) needs, its hundreds of small kernels being launch-bound."""
    unet = pipeline.unet
    mode = "reduce-overhead" if next(unet.parameters()).device.type == "cuda" else None
    pipeline.unet = torch.compile(unet, mode=mode)


def freeze(pipeline: Any) -> None:
    """Put every torch module of ``pipeline`` in eval mode with ``requires_grad=False``."""
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)
            component.eval()


# ---------------------------------------------------------------------------------------------------------------
# the tool
# ---------------------------------------------------------------------------------------------------------------
class GeneratorTool(ABC):
    """A frozen diffusers pipeline driven by conditioning embeddings; one call produces one encoded medium.

    Build it with :meth:`from_config` (or :func:`build_generator`). ``generate(conditioning)`` validates the
    tensors against :meth:`conditioning_specs`, pairs them with the cached empty-prompt negatives for
    classifier-free guidance, runs the pipeline with a seeded generator (same seed -> same bytes) and encodes the
    first sample (PNG, MP4/GIF, WAV).
    """

    modality: ClassVar[str]
    default_signal_prefix: ClassVar[str]
    #: the diffusers pipeline class (``type[Any]``: under a type checker ``diffusers`` exports its dummy objects)
    pipeline_class: ClassVar[type[Any]]

    #: ``cfg.options`` / ``generate(**options)`` keys passed on to the pipeline call, with their defaults
    #: (``None``: leave the pipeline's own default). A class attribute that an instance may override
    #: (:class:`~generators.audio.MelDiffusionTool` sizes its spectrogram from the model folder).
    call_options: Mapping[str, Any] = {}
    #: option keys consumed by :meth:`_encode_output` (``fps``, ``format`` ...), with their defaults.
    output_options: ClassVar[Mapping[str, Any]] = {}
    #: conditioning name -> the pipeline's attention-mask keyword for it; the tool passes all-ones masks (every
    #: projected position is attended to), and ``negative_<mask>`` for the negatives.
    attention_masks: ClassVar[Mapping[str, str]] = {}
    #: the pipeline's ``output_type`` that :meth:`_encode_output` expects.
    output_type: ClassVar[str] = "np"
    #: extra keyword arguments for ``pipeline_class.from_pretrained``.
    load_kwargs: ClassVar[Mapping[str, Any]] = {}
    #: whether the tool offers ``target_latents`` / ``diffusion_loss`` (see :class:`LatentDiffusionLoss`).
    supports_diffusion_loss: ClassVar[bool] = False
    #: the pipeline components only generation (and the latent-diffusion loss) use; ``from_config(...,
    #: conditioning_only=True)`` leaves them out and keeps the text side that :meth:`encode_text` needs.
    generation_components: ClassVar[tuple[str, ...]] = ("unet", "vae", "scheduler")

    def __init__(self, pipeline: Any, cfg: GeneratorConfig, *, seed: int = 0) -> None:
        self.pipeline = pipeline
        self.cfg = cfg
        self.seed = seed
        self._negative: dict[str, torch.Tensor] | None = None
        unknown = set(cfg.options) - set(self.call_options) - set(self.output_options)
        if unknown:
            raise ValueError(self._unknown_options_message(unknown))
        if cfg.compile and not self.conditioning_only:
            compile_denoiser(pipeline)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        cfg: GeneratorConfig,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        conditioning_only: bool = False,
    ) -> Self:
        """Load ``cfg.model`` (a Hugging Face id, a local folder or ``@tiny/<name>``) frozen on ``device``.

        ``conditioning_only``: load only what :meth:`encode_text` needs (the tokenizer and text encoder), not the
        :attr:`generation_components` -- what training the output projector against the text features needs, in
        a fraction of the memory. Such a tool cannot generate. The folder may then hold only the text side."""
        # 1. Resolve the model name to something from_pretrained loads (tiny components are built on first use)
        source = resolve_model(cfg.model, seed)
        # 2. Load, place and freeze the pipeline (a component passed as None is not loaded)
        skipped = dict.fromkeys(cls.generation_components) if conditioning_only else {}
        pipeline = cls.pipeline_class.from_pretrained(
            source,
            dtype=dtype,  # torch_dtype= is deprecated
            **{**cls.load_kwargs, **skipped},
        )
        pipeline.to(device)
        freeze(pipeline)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, cfg, seed=seed)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the pipeline runs: its denoiser's (else text encoder's) first parameter. ``pipeline.device`` gives
        the same answer by walking every module of every component, which showed as 15 % of a busy server's GIL
        time (docs/benchmarks.md)."""
        for name in ("unet", "transformer", "text_encoder"):
            module = getattr(self.pipeline, name, None)
            if isinstance(module, torch.nn.Module):
                for parameter in module.parameters():
                    return parameter.device
        return self.pipeline.device

    @property
    def conditioning_only(self) -> bool:
        """Whether the pipeline was loaded without its :attr:`generation_components` (it can only encode text)."""
        return any(getattr(self.pipeline, name, None) is None for name in self.generation_components)

    def _require_denoiser(self, action: str) -> None:
        if self.conditioning_only:
            raise RuntimeError(
                f"{type(self).__name__} of {self.cfg.model!r} was loaded for its text conditioning "
                f"only (no {', '.join(self.generation_components)}), so it cannot {action}; load "
                f"it without conditioning_only=True"
            )

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.dtype

    @property
    def signal_prefix(self) -> str:
        """The signal token stem, e.g. ``IMG`` for ``[IMG0]..``."""
        return self.cfg.signal_prefix or self.default_signal_prefix

    @property
    def signal_tokens(self) -> list[str]:
        return [f"[{self.signal_prefix}{i}]" for i in range(self.cfg.num_signal_tokens)]

    def cache_key(self) -> str:
        """A stable key for caches of :meth:`encode_text` targets: ``<kind>-<16 hex digits>`` of the model's
        identity (:func:`~core.hub.model_identity`), the dtype and the conditioning shapes."""
        model = model_identity(self.cfg.model, self.seed)
        fields = {
            "kind": self.cfg.kind,
            "model": model,
            "dtype": str(self.dtype),
            "specs": [(s.name, s.length, s.dim) for s in self.conditioning_specs()],
        }
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        return f"{self.cfg.kind}-{digest[:16]}"

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """All parameters of the (frozen) pipeline modules."""
        for component in self.pipeline.components.values():
            if isinstance(component, torch.nn.Module):
                yield from component.parameters()

    # -- hooks for subclasses -----------------------------------------------------------------------------------
    @abstractmethod
    def conditioning_specs(self) -> list[ConditioningSpec]:
        """The tensors the pipeline is driven by, read from its own configs."""
        ...

    @abstractmethod
    def _encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The pipeline's own text-encoder features of ``prompts``: ``{spec.name: (B, L, D)}``."""
        ...

    @abstractmethod
    def _encode_output(self, sample: Any, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        """One generated sample (the first of the pipeline's output batch) -> ``(bytes, mime, metadata)``."""
        ...

    # -- text features ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The pipeline's own text features for ``prompts`` as ``{name: (B, L, D)}``, in exactly the form the
        pipeline accepts as embeddings: the output projector's alignment targets."""
        features = self._encode_text(list(prompts))
        return {name: tensor.to(device=self.device, dtype=self.dtype) for name, tensor in features.items()}

    def negative_conditioning(self) -> dict[str, torch.Tensor]:
        """Empty-prompt features ``{name: (1, L, D)}`` for classifier-free guidance (computed once)."""
        if self._negative is None:
            self._negative = self.encode_text([""])
        return self._negative

    def validate(self, conditioning: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check ``conditioning`` against :meth:`conditioning_specs`; return it as ``(1, L, D)`` tensors on the
        pipeline's device and dtype. ``(L, D)`` tensors are accepted as a batch of one."""
        specs = self.conditioning_specs()
        unexpected = set(conditioning) - {spec.name for spec in specs}
        if unexpected:
            raise ValueError(
                f"{type(self).__name__}: unexpected conditioning {sorted(unexpected)}; "
                f"expected {[spec.name for spec in specs]}"
            )
        checked: dict[str, torch.Tensor] = {}
        for spec in specs:
            expected = (1, spec.length, spec.dim)
            if spec.name not in conditioning:
                raise ValueError(f"{type(self).__name__}: missing conditioning {spec.name!r} of shape {expected}")
            tensor = conditioning[spec.name]
            if tensor.dim() == 2:
                tensor = tensor.unsqueeze(0)  # (L, D) -> (1, L, D)
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"{type(self).__name__}: conditioning {spec.name!r} must have shape {expected}, "
                    f"got {tuple(conditioning[spec.name].shape)}"
                )
            checked[spec.name] = tensor.detach().to(device=self.device, dtype=self.dtype)
        return checked

    # -- generation ---------------------------------------------------------------------------------------------
    def generate(
        self,
        conditioning: Mapping[str, torch.Tensor],
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> GeneratedMedia:
        """Generate one medium from ``conditioning`` (``{name: (1, L, D)}``, e.g. an output projector's result).

        Args:
            conditioning: one tensor per :meth:`conditioning_specs` entry.
            num_inference_steps: denoising steps (default ``cfg.num_inference_steps``).
            guidance_scale: classifier-free guidance weight (default ``cfg.guidance_scale``; ``<= 1`` disables it).
            seed: seed of the initial noise (default: the tool's seed); the same seed gives identical bytes.
            progress: called as ``progress(step, total)`` after each denoising step, ``step`` = 1..total. It may
                raise to cancel the generation.
            options: per-call overrides of ``cfg.options`` (:attr:`call_options` and :attr:`output_options`).
        """
        return self.generate_many(
            [conditioning],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seeds=[seed],
            progress=[progress],
            **options,
        )[0]

    def generate_many(
        self,
        conditionings: Sequence[Mapping[str, torch.Tensor]],
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seeds: Sequence[int | None],
        progress: Sequence[Progress | None] = (),
        **options: Any,
    ) -> list[GeneratedMedia]:
        """Generate one medium per conditioning in one batched pipeline call (:meth:`generate`'s arguments, with a
        seed and a progress callback per medium). Each medium's initial noise comes from its own seed, so it is the
        medium :meth:`generate` gives alone with that seed."""
        # 1. Resolve the call parameters: explicit arguments win over the config
        steps, guidance, merged = self.call_settings(num_inference_steps, guidance_scale, options)
        chosen = [self.seed if s is None else int(s) for s in seeds]
        if len(chosen) != len(conditionings):
            raise ValueError(f"{len(conditionings)} conditionings need as many seeds, got {len(chosen)}")

        # 2. Validate the conditionings and pair them with the empty-prompt negatives (the pipeline batches
        #    [negative, conditional] itself for classifier-free guidance)
        positives = [self.validate(c) for c in conditionings]
        negative = self.negative_conditioning()
        batch = len(positives)
        kwargs: dict[str, Any] = {}
        for name in positives[0]:
            kwargs[name] = torch.cat([p[name] for p in positives])  # (B, L, D)
            kwargs[f"negative_{name}"] = negative[name].expand(batch, *negative[name].shape[1:])  # (B, L, D)
        for name, mask in self.attention_masks.items():
            ones = torch.ones(kwargs[name].shape[:2], dtype=torch.long, device=self.device)  # (B, L)
            kwargs[mask] = ones
            kwargs[f"negative_{mask}"] = ones

        # 3. Modality knobs the pipeline takes (height/width, num_frames, audio_length_in_s ...)
        kwargs.update({key: merged[key] for key in self.call_options if merged[key] is not None})

        # 4. Progress reporting in whichever callback style the pipeline supports, to every caller
        callbacks = [p for p in progress if p is not None]
        if callbacks:

            def report(step: int, total: int) -> None:
                for callback in callbacks:
                    callback(step, total)

            kwargs.update(progress_kwargs(self.pipeline, report, steps))

        # 5. Denoise with one seeded CPU generator per medium, so its noise is the same on every device and batch
        generator = [torch.Generator(device="cpu").manual_seed(s) for s in chosen]
        with torch.no_grad():
            output = self.pipeline(
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator if batch > 1 else generator[0],
                output_type=self.output_type,
                **kwargs,
            )

        # 6. Encode each sample of the output batch
        media = []
        for i, seed in enumerate(chosen):
            data, mime, metadata = self._encode_output(output[0][i], merged)
            metadata.update(steps=steps, guidance_scale=guidance, seed=seed)
            media.append(GeneratedMedia(data=data, mime=mime, modality=self.modality, metadata=metadata))
        return media

    def call_settings(
        self, num_inference_steps: int | None, guidance_scale: float | None, options: Mapping[str, Any]
    ) -> tuple[int, float, dict[str, Any]]:
        """The steps, guidance and options of a call: explicit arguments over the config (an unknown option is an
        error); refuses a tool loaded without its denoiser."""
        self._require_denoiser("generate")
        steps = num_inference_steps or self.cfg.num_inference_steps
        guidance = self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        unknown = set(options) - set(self.call_options) - set(self.output_options)
        if unknown:
            raise ValueError(self._unknown_options_message(unknown))
        return steps, guidance, {**self.call_options, **self.output_options, **self.cfg.options, **options}

    def _unknown_options_message(self, unknown: set[str]) -> str:
        known = sorted({*self.call_options, *self.output_options})
        return f"{type(self).__name__}: unknown options {sorted(unknown)}; known options: {known}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.cfg.model!r}, device={self.device}, dtype={self.dtype})"


class ClipTextConditioning:
    """Mixin for pipelines conditioned on one CLIP text encoder's last hidden states (Stable Diffusion,
    ModelScope text-to-video): ``prompt_embeds`` of ``(tokenizer.model_max_length, text_encoder.hidden_size)``,
    computed with the pipeline's own ``encode_prompt``."""

    pipeline: Any
    device: torch.device  # GeneratorTool's

    def conditioning_specs(self) -> list[ConditioningSpec]:
        return [
            ConditioningSpec(
                "prompt_embeds", self.pipeline.tokenizer.model_max_length, self.pipeline.text_encoder.config.hidden_size
            )
        ]

    def _encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        prompt_embeds, _ = self.pipeline.encode_prompt(prompts, self.device, 1, False)
        return {"prompt_embeds": prompt_embeds}  # (B, 77, D) for the real checkpoints


class LatentDiffusionLoss(GeneratorTool):
    """Base of the tools whose pipelines have a ``vae`` and a ``unet(sample, t, encoder_hidden_states=prompt_embeds)``
    (Stable Diffusion, ModelScope text-to-video): the optional latent-diffusion training loss of NExT-GPT's decoder
    side.

    ``target_latents`` encodes wanted outputs to clean VAE latents (``(C, h, w)`` per image, ``(C, F, h, w)`` per
    video, at the configured output size); ``diffusion_loss`` noises them at random timesteps and scores the frozen
    UNet's noise (or v) prediction conditioned on the output projector's tensors, so the gradient reaches the
    projector through the frozen denoiser. Subclasses say how a target file becomes frames (``_target_frames``).
    """

    supports_diffusion_loss: ClassVar[bool] = True

    @abstractmethod
    def _target_frames(self, data: bytes, limits: Any) -> list[Any]:
        """One target file -> RGB PIL frames (one for an image)."""
        ...

    def latents_cache_key(self) -> str:
        """Feature-cache key of :meth:`target_latents`: the tool's key plus the output size and frame count."""
        shape = json.dumps([self.cache_key(), self._output_size(), self.cfg.options.get("num_frames")])
        return f"{self.cache_key()}-latents-{hashlib.sha256(shape.encode()).hexdigest()[:12]}"

    def _output_size(self) -> tuple[int, int]:
        default = self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor
        return int(self.cfg.options.get("height") or default), int(self.cfg.options.get("width") or default)

    @torch.no_grad()
    def target_latents(self, data: list[bytes], limits: Any) -> torch.Tensor:
        """Target files -> clean latents ``(N, C, h, w)`` (images) or ``(N, C, F, h, w)`` (videos)."""
        self._require_denoiser("encode target latents")
        height, width = self._output_size()
        vae = self.pipeline.vae
        out = []
        for item in data:
            frames = [f.convert("RGB").resize((width, height)) for f in self._target_frames(item, limits)]
            pixels = torch.from_numpy(np.stack([np.asarray(f) for f in frames])).float()  # (F, H, W, 3) in 0..255
            pixels = (pixels.permute(0, 3, 1, 2) / 127.5 - 1.0).to(vae.device, vae.dtype)  # (F, 3, H, W) in -1..1
            latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # (F, C, h, w)
            out.append(latents[0] if self.modality == "image" else latents.permute(1, 0, 2, 3))  # (C, [F,] h, w)
        return torch.stack(out).float().cpu()

    def denoiser_conditioning(self, prompt: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The ``encoder_hidden_states`` the UNet takes for ``prompt`` ``(N, L, D)`` and ``latents``: the prompt
        itself (one condition per sample); UNets that read one per frame repeat it."""
        return prompt

    def diffusion_loss(
        self, conditioning: dict[str, torch.Tensor], latents: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Denoising MSE of the frozen UNet on ``latents`` (N, ...) conditioned on ``conditioning`` (N, L, D).
        Always the eager UNet: a compiled one (:func:`compile_denoiser`) replays CUDA graphs made for inference."""
        self._require_denoiser("score the latent-diffusion loss")
        unet, scheduler = self.pipeline.unet, self.pipeline.scheduler
        unet = getattr(unet, "_orig_mod", unet)  # torch.compile's wrapper keeps the module as ``_orig_mod``
        latents = latents.to(unet.device, unet.dtype)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        steps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
        steps = steps.to(unet.device)
        noisy = scheduler.add_noise(latents, noise, steps)
        kind = scheduler.config.prediction_type
        target = noise if kind == "epsilon" else scheduler.get_velocity(latents, noise, steps)
        prompt = self.denoiser_conditioning(conditioning["prompt_embeds"].to(unet.dtype), latents)
        pred = unet(noisy, steps, encoder_hidden_states=prompt).sample
        return torch.nn.functional.mse_loss(pred.float(), target.float())


def build_generator(cfg: GeneratorConfig, **kwargs: Any) -> GeneratorTool:
    """Build the generator tool ``cfg.kind`` names (``device=``, ``dtype=``, ``seed=``, ``conditioning_only=`` go to
    ``from_config``)."""
    return GENERATORS.get(cfg.kind).from_config(cfg, **kwargs)
