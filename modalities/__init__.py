"""The input side of mmgraph: safe media decoding, frozen modality encoders and trainable input projectors.

``I_X --decode--> media --ModalityEncoder (frozen)--> F_X (B, G, T, D_enc) --InputProjector--> P_X (B, M, D_llm)``

Three registries name the components, so configs and plugins refer to them by kind:

* :data:`DECODERS` (``modalities.media``) -- ``image`` | ``audio`` | ``video`` -> decoder function;
  entry-point group ``mmgraph.decoders``.
* :data:`ENCODERS` (``modalities.registry``) -- ``clip_vision`` | ``siglip_vision`` | ``whisper`` |
  ``video_frames`` -> a :class:`ModalityEncoder` subclass; entry-point group ``mmgraph.modalities``.
* :data:`PROJECTORS` (``modalities.registry``) -- ``linear`` | ``mlp`` | ``resampler`` | ``qformer`` -> an
  :class:`InputProjector` subclass; entry-point group ``mmgraph.projectors``.

Importing this package is cheap: the registries hold ``"module:attr"`` strings, and the torch-heavy modules
(``base``, ``image``, ``audio``, ``video``, ``input_projectors``) and the media module are imported on first use
of a name they own (PEP 562). The submodules import what they need from ``modalities.registry`` and from each
other, never from this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.registry import lazy_exports
from modalities.registry import ENCODERS, PROJECTORS

if TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers
    from modalities.base import ModalityEncoder, build_encoder
    from modalities.input_projectors import InputProjector, build_projector
    from modalities.media import DECODERS, decode

# Names served lazily from their (heavier) modules on first attribute access (PEP 562).
_LAZY = {
    "DECODERS": "modalities.media",
    "decode": "modalities.media",
    "ModalityEncoder": "modalities.base",
    "build_encoder": "modalities.base",
    "InputProjector": "modalities.input_projectors",
    "build_projector": "modalities.input_projectors",
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
