"""Audio generation: a frozen ``AudioLDM2Pipeline`` (or a mel-spectrogram Stable Diffusion) driven by embeddings -> WAV.

AudioLDM 2 conditions its UNet on two sequences, so the tool has two conditioning specs:

* ``prompt_embeds`` -- the T5 encoder (``text_encoder_2``) states, ``(tokenizer_2.model_max_length, d_model)``;
* ``generated_prompt_embeds`` -- the GPT-2 ``language_model`` states generated from the projected CLAP + T5
  features, ``(language_model.config.max_new_tokens, hidden_size)``.

:meth:`AudioLDM2Tool._encode_text` computes both with the pipeline's own components the way its
``encode_prompt`` does, except that the T5 sequence is padded to its full length so that the shape is fixed (the
pipeline itself pads to the longest prompt). Generation passes all-ones attention masks: every projected position
is attended to, as with Stable Diffusion's padded 77-token CLIP states.

:class:`MelDiffusionTool` is the small alternative the tinyworld trains on a CPU: a plain
``StableDiffusionPipeline`` whose 1-channel "image" is a normalised log-mel spectrogram (``n_mels`` rows, one
column per STFT hop), turned back into a waveform by a pseudo-inverse of the mel filterbank and Griffin-Lim. The
spectrogram parameters live once, in :class:`MelParams`; the tinyworld recipe computes its training targets with
the very same :meth:`MelParams.mel`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AudioLDM2Pipeline, StableDiffusionPipeline

from core.hub import resolve_model
from generators.base import ClipTextConditioning, ConditioningSpec, GeneratorTool
from generators.stepping import SteppedDenoising
from modalities.media import encode_wav


class AudioLDM2Tool(GeneratorTool):
    """Text-to-audio with ``AudioLDM2Pipeline``; ``options``: ``audio_length_in_s`` (default: the pipeline's,
    10.24 s for the real checkpoints). Output: 16-bit mono WAV at the vocoder's sampling rate."""

    modality = "audio"
    default_signal_prefix = "AUD"
    pipeline_class = AudioLDM2Pipeline
    generation_components = ("unet", "vae", "vocoder", "scheduler")
    call_options = {"audio_length_in_s": None}
    attention_masks = {"prompt_embeds": "attention_mask"}

    def conditioning_specs(self) -> list[ConditioningSpec]:
        pipe = self.pipeline
        return [
            ConditioningSpec(
                "prompt_embeds", pipe.tokenizer_2.model_max_length, pipe.text_encoder_2.config.hidden_size
            ),
            ConditioningSpec(
                "generated_prompt_embeds",
                pipe.language_model.config.max_new_tokens,
                pipe.language_model.config.hidden_size,
            ),
        ]

    def _encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe, device = self.pipeline, self.device
        t5_spec, gpt_spec = self.conditioning_specs()

        # 1. CLAP text branch: one pooled, projected vector per prompt
        clap_inputs = pipe.tokenizer(
            prompts,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).to(device)
        clap = pipe.text_encoder.get_text_features(clap_inputs.input_ids, attention_mask=clap_inputs.attention_mask)
        clap = getattr(clap, "pooler_output", clap)  # transformers 5 returns an output object, 4 a tensor
        clap = clap[:, None, :]  # (B, D_clap) -> (B, 1, D_clap)
        clap_mask = torch.ones(clap.shape[:2], dtype=torch.long, device=device)  # (B, 1)

        # 2. T5 encoder states, padded to the full (fixed) length
        t5_inputs = pipe.tokenizer_2(
            prompts, padding="max_length", max_length=t5_spec.length, truncation=True, return_tensors="pt"
        ).to(device)
        t5 = pipe.text_encoder_2(t5_inputs.input_ids, attention_mask=t5_inputs.attention_mask)[0]  # (B, L, D_t5)

        # 3. Project both into the language model's space and let GPT-2 generate the second sequence
        projected = pipe.projection_model(
            hidden_states=clap, hidden_states_1=t5, attention_mask=clap_mask, attention_mask_1=t5_inputs.attention_mask
        )
        generated = pipe.generate_language_model(
            projected.hidden_states, attention_mask=projected.attention_mask, max_new_tokens=gpt_spec.length
        )  # (B, N, D_gpt2)
        return {"prompt_embeds": t5, "generated_prompt_embeds": generated}

    def _encode_output(self, sample: np.ndarray, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        rate = int(self.pipeline.vocoder.config.sampling_rate)
        return (
            encode_wav(sample, rate),
            "audio/wav",
            {
                "sample_rate": rate,
                "samples": int(sample.shape[-1]),
                "seconds": sample.shape[-1] / rate,
                "format": "wav",
            },
        )


# ---------------------------------------------------------------------------------------------------------------
# mel spectrograms: one set of parameters for training targets and for the tool's inversion
# ---------------------------------------------------------------------------------------------------------------
MEL_FILE = "mel.json"  # saved next to a mel-diffusion pipeline's model_index.json


@dataclass(frozen=True)
class MelParams:
    """How a waveform becomes the normalised log-mel "image" a mel-diffusion pipeline generates, and back.

    ``frames`` STFT hops of ``hop_length`` samples make the clip (64 x 250 = 16000 samples: one second at 16 kHz),
    so a spectrogram is an ``(n_mels, frames)`` image. Magnitudes are summed by triangular mel filters (HTK mel
    scale, peak 1) between ``fmin`` and ``fmax``, taken to dB (``20 log10``) and mapped linearly from
    ``[db_min, db_max]`` to ``[0, 1]`` (clipped). The inverse maps back to magnitudes, spreads each band over its
    bins with the filterbank's pseudo-inverse (clamped >= 0) and recovers a phase with ``griffin_lim_iters``
    iterations of (fast) Griffin-Lim from a seeded random start.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 250
    frames: int = 64
    n_mels: int = 32
    fmin: float = 0.0
    fmax: float = 8000.0
    db_min: float = -30.0
    db_max: float = 55.0
    griffin_lim_iters: int = 48
    griffin_lim_momentum: float = 0.99

    # -- persistence --------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> MelParams:
        """The parameters saved in ``folder/mel.json`` (unknown keys ignored), or the defaults if there is none."""
        path = Path(folder) / MEL_FILE
        if not path.is_file():
            return cls()
        saved = json.loads(path.read_text())
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MEL_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    # -- derived quantities -------------------------------------------------------------------------------------
    @property
    def samples(self) -> int:
        """Waveform samples covered by ``frames`` hops (16000: one second)."""
        return self.frames * self.hop_length

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def filterbank(self) -> torch.Tensor:
        """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``, peak 1, centres equally spaced on the HTK mel scale."""
        to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
        mels = torch.linspace(to_mel(self.fmin), to_mel(self.fmax), self.n_mels + 2, dtype=torch.float64)
        edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)  # (n_mels + 2,) Hz: lower edge, centre, upper edge
        freqs = torch.linspace(0.0, self.sample_rate / 2, self.n_fft // 2 + 1, dtype=torch.float64)  # (F,)
        lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # each (n_mels, 1)
        rising = (freqs[None, :] - lower) / (centre - lower)
        falling = (upper - freqs[None, :]) / (upper - centre)
        return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # (n_mels, F)

    def _window(self) -> torch.Tensor:
        return torch.hann_window(self.n_fft, dtype=torch.float64)

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        """``(..., samples)`` float64 -> complex ``(..., F, frames + 1)`` (centred frames)."""
        return torch.stft(
            wave,
            self.n_fft,
            self.hop_length,
            window=self._window(),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def _istft(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, self.n_fft, self.hop_length, window=self._window(), center=True, length=self.samples)

    # -- forward: waveform -> normalised mel --------------------------------------------------------------------
    def mel(self, wave: np.ndarray | torch.Tensor) -> np.ndarray:
        """Waveform(s) ``(samples,)`` or ``(B, samples)`` -> normalised log-mel ``(n_mels, frames)`` /
        ``(B, n_mels, frames)`` float32 in [0, 1]. Shorter inputs are zero-padded, longer ones cut."""
        wave = torch.as_tensor(np.asarray(wave), dtype=torch.float64)
        single = wave.dim() == 1
        wave = wave.reshape(-1, wave.shape[-1])  # (B, N)
        wave = torch.nn.functional.pad(wave, (0, max(0, self.samples - wave.shape[-1])))[:, : self.samples]
        magnitude = self._stft(wave).abs()[..., : self.frames]  # (B, F, frames + 1) -> (B, F, frames)
        mel = self.filterbank().double() @ magnitude  # (n_mels, F) @ (B, F, frames) -> (B, n_mels, frames)
        db = 20.0 * torch.log10(torch.clamp(mel, min=1e-6))
        norm = torch.clamp((db - self.db_min) / (self.db_max - self.db_min), 0.0, 1.0).float().numpy()
        return norm[0] if single else norm

    # -- inverse: normalised mel -> waveform --------------------------------------------------------------------
    def magnitude(self, norm: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised mel ``(n_mels, frames)`` -> linear STFT magnitude ``(F, frames)`` (float64, >= 0).

        Values at the floor (0) are silence; the rest go back through dB to mel magnitudes, which the filterbank's
        least-squares pseudo-inverse spreads over the frequency bins."""
        norm = torch.as_tensor(np.asarray(norm), dtype=torch.float64).clamp(0.0, 1.0)
        db = norm * (self.db_max - self.db_min) + self.db_min
        mel = torch.where(norm > 0.0, 10.0 ** (db / 20.0), torch.zeros_like(db))  # (n_mels, frames)
        inverse = torch.linalg.pinv(self.filterbank().double())  # (F, n_mels)
        return torch.clamp(inverse @ mel, min=0.0)  # (F, frames)

    def waveform(
        self,
        norm: np.ndarray | torch.Tensor,
        *,
        seed: int = 0,
        iterations: int | None = None,
    ) -> np.ndarray:
        """Normalised mel ``(n_mels, frames)`` -> float32 waveform ``(frames * hop_length,)`` in [-1, 1] by fast
        Griffin-Lim (momentum ``griffin_lim_momentum``) from a random phase drawn with ``seed``."""
        norm = torch.as_tensor(np.asarray(norm))
        if norm.dim() != 2 or norm.shape[0] != self.n_mels:
            raise ValueError(f"mel spectrogram must have shape ({self.n_mels}, frames), got {tuple(norm.shape)}")
        magnitude = self.magnitude(norm)  # (F, frames)
        frames = magnitude.shape[1]
        params = self if frames == self.frames else _with_frames(self, frames)
        # the centred STFT of frames * hop samples has one frame more: repeat the last column
        magnitude = torch.cat([magnitude, magnitude[:, -1:]], dim=1)  # (F, frames + 1)
        generator = torch.Generator().manual_seed(int(seed))
        angles = torch.rand(magnitude.shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
        spec = magnitude * torch.exp(1j * angles)  # complex (F, frames + 1)
        previous = torch.zeros_like(spec)
        for _ in range(self.griffin_lim_iters if iterations is None else iterations):
            rebuilt = params._stft(params._istft(spec))  # the consistent spectrogram nearest to ``spec``
            accelerated = rebuilt + self.griffin_lim_momentum * (rebuilt - previous)
            previous = rebuilt
            spec = magnitude * accelerated / torch.clamp(accelerated.abs(), min=1e-12)
        wave = params._istft(spec).float().numpy()
        return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _with_frames(params: MelParams, frames: int) -> MelParams:
    return replace(params, frames=frames)


# ---------------------------------------------------------------------------------------------------------------
# the mel-diffusion tool
# ---------------------------------------------------------------------------------------------------------------
class MelDiffusionTool(SteppedDenoising, ClipTextConditioning, GeneratorTool):
    """Text-to-audio with a ``StableDiffusionPipeline`` over normalised log-mel spectrograms (1-channel VAE).

    The pipeline generates an ``(n_mels, frames)`` image in [0, 1] (``output_type="np"``: ``(H, W, 1)``); the
    tool inverts it with :meth:`MelParams.waveform` (parameters from the folder's ``mel.json``, else the
    defaults) into 16-bit mono WAV at ``sample_rate``. ``options``: ``width`` (spectrogram frames, default
    ``frames`` of ``mel.json``: one second; a multiple of 8) and ``griffin_lim_iters``.
    """

    modality = "audio"
    default_signal_prefix = "AUD"
    pipeline_class = StableDiffusionPipeline
    call_options = {"height": None, "width": None}
    output_options = {"griffin_lim_iters": None}
    output_type = "np"
    load_kwargs = {"safety_checker": None, "requires_safety_checker": False}

    def __init__(self, pipeline: Any, cfg: Any, *, seed: int = 0, mel: MelParams | None = None) -> None:
        self.mel = mel or MelParams()
        # the spectrogram's height is fixed by the mel bands; its width (frames) defaults to the trained length
        self.call_options = {"height": self.mel.n_mels, "width": self.mel.frames}
        super().__init__(pipeline, cfg, seed=seed)
        if "height" in cfg.options and int(cfg.options["height"]) != self.mel.n_mels:
            raise ValueError(
                f"MelDiffusionTool: height is the number of mel bands ({self.mel.n_mels}), got {cfg.options['height']}"
            )

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> MelDiffusionTool:
        tool = super().from_config(cfg, **kwargs)
        folder = Path(resolve_model(cfg.model, tool.seed))
        if folder.is_dir():  # a hub id has no local folder: the defaults apply
            tool.mel = MelParams.load(folder)
            tool.call_options = {"height": tool.mel.n_mels, "width": tool.mel.frames}
        return tool

    def _encode_output(self, sample: np.ndarray, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        sample = np.asarray(sample)
        if sample.ndim == 3:
            sample = sample[..., 0]  # (H, W, 1) -> (H, W) = (n_mels, frames)
        iterations = options.get("griffin_lim_iters")
        wave = self.mel.waveform(sample, seed=self.seed, iterations=None if iterations is None else int(iterations))
        rate = self.mel.sample_rate
        return (
            encode_wav(wave, rate),
            "audio/wav",
            {
                "sample_rate": rate,
                "samples": int(wave.shape[-1]),
                "seconds": wave.shape[-1] / rate,
                "format": "wav",
            },
        )
