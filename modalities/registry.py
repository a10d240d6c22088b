"""The input side's component registries: kind name -> ``"module:attr"`` of the class that implements it.

* :data:`ENCODERS` -- ``clip_vision`` | ``siglip_vision`` | ``whisper`` | ``video_frames`` -> a
  :class:`~modalities.base.ModalityEncoder` subclass; entry-point group ``mmgraph.modalities``.
* :data:`PROJECTORS` -- ``linear`` | ``mlp`` | ``resampler`` | ``qformer`` -> an
  :class:`~modalities.input_projectors.InputProjector` subclass; entry-point group ``mmgraph.projectors``.

This module imports nothing heavy: the targets are strings, imported when a kind is first resolved. The modules
that implement the kinds import their registry from here (never from the ``modalities`` package, which
re-exports them).
"""

from __future__ import annotations

from typing import Any

from core.registry import Registry

ENCODERS: Registry[Any] = Registry(
    "modality encoder",
    "mmgraph.modalities",
    {
        "clip_vision": "modalities.image:ClipVisionEncoder",
        "siglip_vision": "modalities.image:SiglipVisionEncoder",
        "mllama_vision": "modalities.image:MllamaVisionEncoder",
        "blip_vision": "modalities.image:BlipVisionEncoder",
        "llava_next_vision": "modalities.image:LlavaNextVisionEncoder",
        "whisper": "modalities.audio:WhisperAudioEncoder",
        "video_frames": "modalities.video:VideoFrameEncoder",
    },
)

PROJECTORS: Registry[Any] = Registry(
    "input projector",
    "mmgraph.projectors",
    {
        "linear": "modalities.input_projectors:LinearProjector",
        "masked_linear": "modalities.input_projectors:MaskedLinearProjector",
        "mlp": "modalities.input_projectors:MLPProjector",
        "resampler": "modalities.input_projectors:ResamplerProjector",
        "qformer": "modalities.input_projectors:QFormerProjector",
        "blip2_qformer": "modalities.input_projectors:Blip2QFormerProjector",
        "llava_next": "modalities.input_projectors:LlavaNextProjector",
        "instructblip_qformer": "modalities.input_projectors:InstructBlipQFormerProjector",
    },
)
