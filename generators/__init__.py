"""The output side of mmgraph: trainable output projectors and frozen diffusion generators ("tools").

``signal hidden states (B, k, D_llm) --OutputProjector--> conditioning {name: (B, L, D)} --GeneratorTool--> bytes``

Two registries name the components, so configs and plugins refer to them by kind:

* :data:`GENERATORS` -- ``stable_diffusion`` | ``text_to_video_sd`` | ``animatediff`` | ``audioldm2`` |
  ``mel_diffusion`` -> a
  :class:`~generators.base.GeneratorTool` subclass; entry-point group ``mmgraph.generators``.
* :data:`OUTPUT_PROJECTORS` -- ``mlp`` | ``transformer`` -> an :class:`~generators.output_projectors.OutputProjector`
  subclass; entry-point group ``mmgraph.output_projectors``.

Importing this package is cheap: the registries hold ``"module:attr"`` strings, and the torch / diffusers
modules are imported on first use (the other public names are served lazily, PEP 562).
"""

from __future__ import annotations

from typing import Any

from core.registry import Registry, lazy_exports

GENERATORS: Registry[Any] = Registry(
    "generator",
    "mmgraph.generators",
    {
        "stable_diffusion": "generators.image:StableDiffusionTool",
        "text_to_video_sd": "generators.video:TextToVideoTool",
        "animatediff": "generators.video:AnimateDiffTool",
        "audioldm2": "generators.audio:AudioLDM2Tool",
        "mel_diffusion": "generators.audio:MelDiffusionTool",
    },
)

OUTPUT_PROJECTORS: Registry[Any] = Registry(
    "output projector",
    "mmgraph.output_projectors",
    {
        "mlp": "generators.output_projectors:MLPOutputProjector",
        "transformer": "generators.output_projectors:TransformerOutputProjector",
    },
)

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


__all__ = ["GENERATORS", "OUTPUT_PROJECTORS", *_LAZY]
