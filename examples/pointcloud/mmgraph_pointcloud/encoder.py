"""The point-cloud encoder: a PointBERT-style patch transformer, and its frozen mmgraph wrapper.

:class:`PointEncoderModel` is a Hugging Face ``PreTrainedModel`` (config :class:`PointEncoderConfig`), so it saves
and loads with ``save_pretrained`` / ``from_pretrained`` (safetensors) like any checkpoint::

    points (B, N, 3) --centre, scale to the unit ball--> farthest-point sampling: G centres (B, G, 3)
      --K nearest neighbours of each centre, relative to it--> (B, G, K, 3)
      --shared point MLP, max over K (PointNet)--> patch tokens (B, G, D) + MLP(centre)
      --[CLS] + transformer encoder--> (B, 1 + G, D)

:class:`PointPatchEncoder` (registry kind ``point_patches``, decoder ``point_cloud``) wraps a saved model for
mmgraph: ``preprocess`` resamples each decoded cloud to ``num_points`` points (seeded, so the same cloud always
gives the same features), ``forward`` returns ``(B, 1, 1 + G, D)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from core.config import ModalityConfig
from modalities.base import ModalityEncoder


class PointEncoderConfig(PretrainedConfig):
    model_type = "mmgraph_point_encoder"

    def __init__(
        self,
        num_points: int = 512,
        num_patches: int = 32,
        patch_size: int = 16,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        **kwargs: Any,
    ) -> None:
        self.num_points = num_points
        self.num_patches = num_patches
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        super().__init__(**kwargs)


def normalise(points: torch.Tensor) -> torch.Tensor:
    """Centre each cloud and scale it into the unit ball: ``(B, N, 3)`` -> ``(B, N, 3)``."""
    centred = points - points.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=-1).amax(dim=1).clamp_min(1e-6)[:, None, None]


def farthest_points(points: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``(B, count)`` of farthest-point samples, starting from the point farthest from the centroid."""
    b, n, _ = points.shape
    chosen = torch.empty(b, count, dtype=torch.long, device=points.device)
    nearest = torch.full((b, n), float("inf"), device=points.device)
    current = points.norm(dim=-1).argmax(dim=1)  # (B,)
    rows = torch.arange(b, device=points.device)
    for i in range(count):
        chosen[:, i] = current
        distance = (points - points[rows, current][:, None]).square().sum(-1)  # (B, N)
        nearest = torch.minimum(nearest, distance)
        current = nearest.argmax(dim=1)
    return chosen


class PointEncoderModel(PreTrainedModel):
    config_class = PointEncoderConfig
    base_model_prefix = "point_encoder"
    main_input_name = "points"

    def __init__(self, config: PointEncoderConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.point_mlp = nn.Sequential(nn.Linear(3, d // 2), nn.GELU(), nn.Linear(d // 2, d))
        self.centre_mlp = nn.Sequential(nn.Linear(3, d // 2), nn.GELU(), nn.Linear(d // 2, d))
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerEncoderLayer(d, config.num_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.post_init()

    def forward(self, points: torch.Tensor, **_: Any) -> BaseModelOutput:
        """``points`` (B, N, 3) -> ``last_hidden_state`` (B, 1 + G, D) ([CLS] first)."""
        cfg = self.config
        points = normalise(points.float()).to(self.cls.dtype)
        b = points.shape[0]
        rows = torch.arange(b, device=points.device)[:, None]
        centres = points[rows, farthest_points(points, cfg.num_patches)]  # (B, G, 3)
        k = min(cfg.patch_size, points.shape[1])
        neighbours = torch.cdist(centres, points).topk(k, dim=-1, largest=False).indices  # (B, G, K)
        local = points[rows[..., None], neighbours] - centres[:, :, None]  # (B, G, K, 3), relative to the centre
        tokens = self.point_mlp(local).amax(dim=2) + self.centre_mlp(centres)  # (B, G, K, D) -> (B, G, D)
        tokens = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1)  # (B, 1 + G, D)
        return BaseModelOutput(last_hidden_state=self.norm(self.blocks(tokens)))


class PointPatchEncoder(ModalityEncoder):
    """Frozen point-cloud encoder for mmgraph: decoded clouds -> features ``(B, 1, 1 + G, D)``."""

    input_kind: ClassVar[str] = "point_cloud"
    kind: ClassVar[str] = "point_patches"

    def __init__(self, cfg: ModalityConfig, model: PointEncoderModel) -> None:
        super().__init__(cfg)
        self.model = model
        self.num_points = int(cfg.options.get("num_points", model.config.num_points))

    @classmethod
    def load(cls, cfg: ModalityConfig, path: str) -> PointPatchEncoder:
        return cls(cfg, PointEncoderModel.from_pretrained(path))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def tokens_per_group(self) -> int:
        return 1 + int(self.model.config.num_patches)

    def preprocess(self, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Clouds ``(N_i, 3)`` -> ``{"points": (B, num_points, 3)}``: a seeded subset, or repeats if too few."""
        batch = []
        for cloud in items:
            cloud = np.asarray(cloud, dtype=np.float32)
            rng = np.random.default_rng(len(cloud))
            pick = rng.choice(len(cloud), self.num_points, replace=len(cloud) < self.num_points)
            batch.append(torch.from_numpy(cloud[np.sort(pick)]))
        return {"points": torch.stack(batch)}

    @torch.no_grad()
    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (B, P, 3) -> features (B, 1, 1 + G, D)."""
        return self.model(points=self._to_model(points)).last_hidden_state.unsqueeze(1)  # (B, T, D) -> (B, 1, T, D)

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "num_points": self.num_points}
