"""mmgraph-pointcloud: 3D point clouds as an mmgraph input modality (the worked example of docs/extending.md).

Installed with pip, the package announces its components through entry points (see ``pyproject.toml``), so a
SystemConfig can name them right away::

    modalities:
      point_cloud:
        encoder: point_patches          # mmgraph.modalities -> PointPatchEncoder
        model: runs/points/encoder      # a folder written by PointEncoderModel.save_pretrained
        projector: {kind: set_pool, num_queries: 4}   # mmgraph.projectors -> SetPoolProjector

and ``Assistant.chat(..., media={"point_cloud": ["cloud.ply"]})`` decodes the file with the ``point_cloud``
decoder (mmgraph.decoders). Without installing, call :func:`register` once instead.

Modules: :mod:`.decoder` (``.npy`` / ``.ply`` bytes -> ``(N, 3)`` float32, with limits), :mod:`.encoder` (a
PointBERT-style patch transformer as a Hugging Face ``PreTrainedModel``, and its frozen mmgraph wrapper),
:mod:`.projector` (an order-free set-pooling projector), :mod:`.shapes` (synthetic cubes, spheres, cones...)
and :mod:`.recipe` (pre-train the encoder, write PT / IT data, train the projector, score it).
"""

from __future__ import annotations

from modalities import ENCODERS, PROJECTORS
from modalities.media import DECODERS

DECODER = "point_cloud"
ENCODER = "point_patches"
PROJECTOR = "set_pool"


def register() -> None:
    """Register the three components in-process (what the entry points do for an installed package)."""
    DECODERS.register(DECODER, "mmgraph_pointcloud.decoder:decode_point_cloud")
    ENCODERS.register(ENCODER, "mmgraph_pointcloud.encoder:PointPatchEncoder")
    PROJECTORS.register(PROJECTOR, "mmgraph_pointcloud.projector:SetPoolProjector")
