"""Audio generation: a frozen ``AudioLDM2Pipeline`` driven by embeddings -> WAV.

AudioLDM 2 conditions its UNet on two sequences, so the tool has two conditioning specs:

* ``prompt_embeds`` -- the T5 encoder (``text_encoder_2``) states, ``(tokenizer_2.model_max_length, d_model)``;
* ``generated_prompt_embeds`` -- the GPT-2 ``language_model`` states generated from the projected CLAP + T5
  features, ``(language_model.config.max_new_tokens, hidden_size)``.

:meth:`AudioLDM2Tool._encode_text` computes both with the pipeline's own components the way its
``encode_prompt`` does, except that the T5 sequence is padded to its full length so that the shape is fixed (the
pipeline itself pads to the longest prompt). Generation passes all-ones attention masks: every projected position
is attended to, as with Stable Diffusion's padded 77-token CLIP states.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import AudioLDM2Pipeline

from generators.base import ConditioningSpec, GeneratorTool


class AudioLDM2Tool(GeneratorTool):
    """Text-to-audio with ``AudioLDM2Pipeline``; ``options``: ``audio_length_in_s`` (default: the pipeline's,
    10.24 s for the real checkpoints). Output: 16-bit mono WAV at the vocoder's sampling rate."""

    modality = "audio"
    default_signal_prefix = "AUD"
    pipeline_class = AudioLDM2Pipeline
    call_options = {"audio_length_in_s": None}
    attention_masks = {"prompt_embeds": "attention_mask"}

    def conditioning_specs(self) -> list[ConditioningSpec]:
        pipe = self.pipeline
        return [
            ConditioningSpec("prompt_embeds", pipe.tokenizer_2.model_max_length, pipe.text_encoder_2.config.hidden_size),
            ConditioningSpec("generated_prompt_embeds", pipe.language_model.config.max_new_tokens,
                             pipe.language_model.config.hidden_size),
        ]

    def _encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe, device = self.pipeline, self.pipeline.device
        t5_spec, gpt_spec = self.conditioning_specs()

        # 1. CLAP text branch: one pooled, projected vector per prompt
        clap_inputs = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                     truncation=True, return_tensors="pt").to(device)
        clap = pipe.text_encoder.get_text_features(clap_inputs.input_ids, attention_mask=clap_inputs.attention_mask)
        clap = getattr(clap, "pooler_output", clap)  # transformers 5 returns an output object, 4 a tensor
        clap = clap[:, None, :]  # (B, D_clap) -> (B, 1, D_clap)
        clap_mask = torch.ones(clap.shape[:2], dtype=torch.long, device=device)  # (B, 1)

        # 2. T5 encoder states, padded to the full (fixed) length
        t5_inputs = pipe.tokenizer_2(prompts, padding="max_length", max_length=t5_spec.length, truncation=True,
                                     return_tensors="pt").to(device)
        t5 = pipe.text_encoder_2(t5_inputs.input_ids, attention_mask=t5_inputs.attention_mask)[0]  # (B, L, D_t5)

        # 3. Project both into the language model's space and let GPT-2 generate the second sequence
        projected = pipe.projection_model(hidden_states=clap, hidden_states_1=t5, attention_mask=clap_mask,
                                          attention_mask_1=t5_inputs.attention_mask)
        generated = pipe.generate_language_model(projected.hidden_states, attention_mask=projected.attention_mask,
                                                 max_new_tokens=gpt_spec.length)  # (B, N, D_gpt2)
        return {"prompt_embeds": t5, "generated_prompt_embeds": generated}

    def _encode_output(self, sample: np.ndarray, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        from modalities.media import encode_wav

        rate = int(self.pipeline.vocoder.config.sampling_rate)
        return encode_wav(sample, rate), "audio/wav", {
            "sample_rate": rate, "samples": int(sample.shape[-1]), "seconds": sample.shape[-1] / rate,
            "format": "wav",
        }
