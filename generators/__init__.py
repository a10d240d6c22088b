"""The output side of mmgraph: trainable output projectors and frozen diffusion generators ("tools").

``signal hidden states (B, k, D_llm) --OutputProjector--> conditioning {name: (B, L, D)} --GeneratorTool--> bytes``

Two registries (``generators.registry``) name the components, so configs and plugins refer to them by kind:

* :data:`GENERATORS` -- ``stable_diffusion`` | ``text_to_video_sd`` | ``animatediff`` | ``audioldm2`` |
  ``mel_diffusion`` -> a
  :class:`~generators.base.GeneratorTool` subclass; entry-point group ``mmgraph.generators``.
* :data:`OUTPUT_PROJECTORS` -- ``mlp`` | ``transformer`` -> an :class:`~generators.output_projectors.OutputProjector`
  subclass; entry-point group ``mmgraph.output_projectors``.

Importing this package is cheap: the registries hold ``"module:attr"`` strings, and the torch / diffusers
modules are imported on first use (the other public names are served lazily, PEP 562). The submodules import
what they need from ``generators.registry`` and from each other, never from this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.registry import lazy_exports
from generators.registry import GENERATORS, OUTPUT_PROJECTORS

if TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers
    from generators.base import ConditioningSpec, GeneratedMedia, GeneratorTool, build_generator
    from generators.output_projectors import OutputProjector, alignment_loss, build_output_projector

# Names served lazily from their (heavier) modules on first attribute access.
_LAZY = {
    "GeneratorTool": "generators.base",
    "ConditioningSpec": "generators.base",
    "GeneratedMedia": "generators.base",
    "build_generator": "generators.base",
    "OutputProjector": "generators.output_projectors",
    "build_output_projector": "generators.output_projectors",
    "alignment_loss": "generators.output_projectors",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "GENERATORS",
    "OUTPUT_PROJECTORS",
    "GeneratorTool",
    "ConditioningSpec",
    "GeneratedMedia",
    "build_generator",
    "OutputProjector",
    "build_output_projector",
    "alignment_loss",
]
