"""An order-free input projector for sets of tokens (kind ``set_pool``).

A point cloud's patch tokens have no natural order, so this projector does not look at one:
``num_queries`` output tokens, each the max over the input tokens of its own MLP head (PointNet's symmetric
function), ``out_m = max_t MLP_m(x_t)``. Permuting the input tokens leaves the output unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from core.config import ProjectorConfig
from modalities.input_projectors import InputProjector


class SetPoolProjector(InputProjector):
    """``(B, T, D_in)`` -> ``(B, num_queries, D_out)``, invariant to the order of the ``T`` tokens."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        width = cfg.width or out_dim
        self.queries = cfg.num_queries
        layers: list[nn.Module] = []
        for i in range(max(cfg.depth - 1, 0)):
            layers += [nn.Linear(in_dim if i == 0 else width, width), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.heads = nn.Linear(width if layers else in_dim, cfg.num_queries * out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.queries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b, t, _ = x.shape
        per_token = self.heads(self.body(x)).reshape(b, t, self.queries, self.out_dim)  # (B, T, M*D) -> (B, T, M, D)
        return self.norm(per_token.amax(dim=1))  # max over the set: (B, M, D)
