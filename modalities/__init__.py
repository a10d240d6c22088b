"""The input side of mmgraph: safe media decoding, frozen modality encoders and trainable input projectors.

``I_X --decode--> media --ModalityEncoder (frozen)--> F_X (B, G, T, D_enc) --InputProjector--> P_X (B, M, D_llm)``

Three registries name the components, so configs and plugins refer to them by kind:

* :data:`DECODERS` (``modalities.media``) -- ``image`` | ``audio`` | ``video`` -> decoder function;
  entry-point group ``mmgraph.decoders``.
* :data:`ENCODERS` -- ``clip_vision`` | ``siglip_vision`` | ``whisper`` | ``video_frames`` -> a
  :class:`ModalityEncoder` subclass; entry-point group ``mmgraph.modalities``.
* :data:`PROJECTORS` -- ``linear`` | ``mlp`` | ``resampler`` | ``qformer`` -> an :class:`InputProjector`
  subclass; entry-point group ``mmgraph.projectors``.

Importing this package is cheap: the registries hold ``"module:attr"`` strings and the torch-heavy modules
(``base``, ``image``, ``audio``, ``video``, ``projectors``) and the media module are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.registry import Registry, lazy_exports

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.config import ModalityConfig, ProjectorConfig
    from modalities.base import ModalityEncoder
    from modalities.input_projectors import InputProjector

ENCODERS: Registry[Any] = Registry(
    "modality encoder",
    "mmgraph.modalities",
    {
        "clip_vision": "modalities.image:ClipVisionEncoder",
        "siglip_vision": "modalities.image:SiglipVisionEncoder",
        "whisper": "modalities.audio:WhisperAudioEncoder",
        "video_frames": "modalities.video:VideoFrameEncoder",
    },
)

PROJECTORS: Registry[Any] = Registry(
    "input projector",
    "mmgraph.projectors",
    {
        "linear": "modalities.input_projectors:LinearProjector",
        "mlp": "modalities.input_projectors:MLPProjector",
        "resampler": "modalities.input_projectors:ResamplerProjector",
        "qformer": "modalities.input_projectors:QFormerProjector",
    },
)


def build_encoder(cfg: ModalityConfig, **kwargs: Any) -> ModalityEncoder:
    """Build the frozen encoder ``cfg.encoder`` names (``device=``, ``dtype=``, ``seed=`` are passed through)."""
    return ENCODERS.get(cfg.encoder).from_config(cfg, **kwargs)


def build_projector(in_dim: int, out_dim: int, cfg: ProjectorConfig) -> InputProjector:
    """Build the trainable input projector ``cfg.kind`` names, mapping ``in_dim`` features to ``out_dim``."""
    return PROJECTORS.get(cfg.kind)(in_dim, out_dim, cfg)


# Names served lazily from their (heavier) modules on first attribute access (PEP 562).
_LAZY = {
    "DECODERS": "modalities.media",
    "decode": "modalities.media",
    "ModalityEncoder": "modalities.base",
    "InputProjector": "modalities.input_projectors",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "DECODERS",
    "decode",
    "ENCODERS",
    "build_encoder",
    "ModalityEncoder",
    "PROJECTORS",
    "build_projector",
    "InputProjector",
]
