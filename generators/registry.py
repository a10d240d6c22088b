"""The output side's component registries: kind name -> ``"module:attr"`` of the class that implements it.

* :data:`GENERATORS` -- ``stable_diffusion`` | ``text_to_video_sd`` | ``animatediff`` | ``audioldm2`` |
  ``mel_diffusion`` -> a :class:`~generators.base.GeneratorTool` subclass; entry-point group
  ``mmgraph.generators``.
* :data:`OUTPUT_PROJECTORS` -- ``mlp`` | ``transformer`` -> an
  :class:`~generators.output_projectors.OutputProjector` subclass; entry-point group
  ``mmgraph.output_projectors``.

This module imports nothing heavy: the targets are strings, imported when a kind is first resolved. The modules
that implement the kinds import their registry from here (never from the ``generators`` package, which
re-exports them).
"""

from __future__ import annotations

from typing import Any

from core.registry import Registry

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
