"""Denoising one step at a time, for batches whose members change between steps (continuous batching of generation).

A :class:`GeneratorTool <generators.base.GeneratorTool>` call runs a whole denoising loop for the media it was given;
a medium asked for a moment later waits for that loop to finish. :class:`SteppedDenoising` splits the loop of a
``StableDiffusionPipeline``-based tool (images, mel-spectrogram audio) into :meth:`~SteppedDenoising.start` (one
medium's initial noise from its seed, its own scheduler and timesteps), :meth:`~SteppedDenoising.step` (one denoising
step for every medium in flight, in one UNet call, each at its own timestep and guidance) and
:meth:`~SteppedDenoising.finish` (VAE decode, post-processing, encoding), so that a new medium joins the running batch
at the next step. Each step computes what the pipeline's own loop computes (classifier-free guidance over
``[negative; positive]``, the scheduler's ``scale_model_input`` and ``step`` with the medium's generator), so a
medium is the one :meth:`GeneratorTool.generate` makes alone with the same seed, up to float rounding in the batched
UNet (tests/test_engine.py compares the pixels).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from generators.base import GeneratedMedia, Progress


@dataclass
class DenoisingJob:
    """One medium being denoised: its latents, its own scheduler and timesteps, its conditioning and settings."""

    latents: torch.Tensor  # (1, C, h, w)
    scheduler: Any
    timesteps: list[Any]
    positive: dict[str, torch.Tensor]  # {name: (1, L, D)}
    negative: dict[str, torch.Tensor]
    guidance: float
    seed: int
    steps: int
    options: dict[str, Any]
    generator: torch.Generator
    progress: Progress | None = None
    cancel: threading.Event | None = None
    index: int = 0  # steps done
    extra: dict[str, Any] = field(default_factory=dict)  # the scheduler's step keywords (generator, eta)

    @property
    def done(self) -> bool:
        return self.index >= len(self.timesteps)


class SteppedDenoising:
    """Mixin for :class:`~generators.base.GeneratorTool` subclasses whose pipeline is a ``StableDiffusionPipeline``
    (see the module docstring); it reads the tool's pipeline, config, seed and options."""

    def start(
        self,
        conditioning: Mapping[str, torch.Tensor],
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> DenoisingJob:
        """A medium ready to denoise: the noise of ``seed``, its scheduler set to ``num_inference_steps``."""
        tool: Any = self  # a GeneratorTool
        steps, guidance, merged = tool.call_settings(num_inference_steps, guidance_scale, {})
        pipe = tool.pipeline
        seed = tool.seed if seed is None else int(seed)
        positive = tool.validate(conditioning)
        scheduler = copy.deepcopy(pipe.scheduler)  # its own: a scheduler may keep a step counter
        scheduler.set_timesteps(steps, device=tool.device)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        scale = pipe.vae_scale_factor
        size = pipe.unet.config.sample_size
        height = merged.get("height") or size * scale
        width = merged.get("width") or size * scale
        dtype = next(iter(positive.values())).dtype
        latents = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, dtype, tool.device, generator)
        job = DenoisingJob(
            latents=latents,
            scheduler=scheduler,
            timesteps=list(scheduler.timesteps),
            positive=positive,
            negative=tool.negative_conditioning(),
            guidance=guidance,
            seed=seed,
            steps=steps,
            options=merged,
            generator=generator,
            progress=progress,
            cancel=cancel,
        )
        job.extra = pipe.prepare_extra_step_kwargs(generator, 0.0)
        return job

    def guided(self, job: DenoisingJob) -> bool:
        """Whether the medium uses classifier-free guidance (the pipeline's own rule)."""
        tool: Any = self
        return job.guidance > 1 and tool.pipeline.unet.config.time_cond_proj_dim is None

    @torch.no_grad()
    def step(self, jobs: list[DenoisingJob]) -> None:
        """One denoising step for every job (none of them done), in one UNet call: the guided ones twice,
        ``[negative; positive]``, each at its own timestep."""
        tool: Any = self
        pipe = tool.pipeline
        inputs: list[torch.Tensor] = []
        times: list[Any] = []
        embeds: list[dict[str, torch.Tensor]] = []
        rows: list[tuple[int, int]] = []  # where each job's (uncond, cond) predictions are
        names = list(jobs[0].positive)
        for job in jobs:
            t = job.timesteps[job.index]
            pair = [job.latents, job.latents] if self.guided(job) else [job.latents]
            scaled = job.scheduler.scale_model_input(torch.cat(pair), t)
            start = len(inputs)
            inputs += list(scaled.split(1))
            times += [t] * len(pair)
            if self.guided(job):
                embeds += [job.negative, job.positive]
                rows.append((start, start + 1))
            else:
                embeds.append(job.positive)
                rows.append((start, start))
        hidden = {name: torch.cat([e[name] for e in embeds]) for name in names}  # (N, L, D)
        device = jobs[0].latents.device  # the pipeline's (``pipe.device`` walks every module: slow per step)
        timestep = torch.stack([torch.as_tensor(t, device=device) for t in times])  # (N,)
        predicted = pipe.unet(
            torch.cat(inputs), timestep, encoder_hidden_states=hidden["prompt_embeds"], return_dict=False
        )[0]  # (N, C, h, w)
        for job, (uncond, cond) in zip(jobs, rows, strict=True):
            noise = predicted[cond : cond + 1]
            if uncond != cond:
                base = predicted[uncond : uncond + 1]
                noise = base + job.guidance * (noise - base)
            t = job.timesteps[job.index]
            job.latents = job.scheduler.step(noise, t, job.latents, **job.extra, return_dict=False)[0]
            job.index += 1
            if job.progress is not None:
                job.progress(job.index, len(job.timesteps))

    @torch.no_grad()
    def finish(self, job: DenoisingJob) -> GeneratedMedia:
        """A denoised medium -> its encoded bytes (what the pipeline's post-processing and the tool's encoder give)."""
        tool: Any = self
        pipe = tool.pipeline
        decoded = pipe.vae.decode(
            job.latents / pipe.vae.config.scaling_factor, return_dict=False, generator=job.generator
        )[0]
        samples = pipe.image_processor.postprocess(decoded, output_type=tool.output_type, do_denormalize=[True])
        data, mime, metadata = tool._encode_output(samples[0], job.options)
        metadata.update(steps=job.steps, guidance_scale=job.guidance, seed=job.seed)
        return GeneratedMedia(data=data, mime=mime, modality=tool.modality, metadata=metadata)
