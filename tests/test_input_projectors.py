"""Trainable input projectors: shapes, token counts, gradients, learning, and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modalities
from core.config import ProjectorConfig
from core.errors import ConfigError
from core.registry import UnknownKindError
from modalities import PROJECTORS, InputProjector, build_projector

IN_DIM, OUT_DIM, TOKENS, BATCH = 24, 32, 10, 3
KINDS = ["linear", "mlp", "resampler", "qformer"]


def make(kind: str, **kw) -> InputProjector:
    torch.manual_seed(0)
    return build_projector(IN_DIM, OUT_DIM, ProjectorConfig(kind=kind, num_queries=6, depth=2, heads=4, **kw))


def features(tokens: int = TOKENS) -> torch.Tensor:
    return torch.randn(BATCH, tokens, IN_DIM, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", KINDS)
def test_shape_and_token_count(kind):
    projector = make(kind)
    assert isinstance(projector, InputProjector)
    for tokens in (TOKENS, 4):
        out = projector(features(tokens))
        assert out.shape == (BATCH, projector.num_output_tokens(tokens), OUT_DIM)
    expected = {"linear": TOKENS, "mlp": TOKENS, "resampler": 6, "qformer": 6}[kind]
    assert projector.num_output_tokens(TOKENS) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    projector = make(kind)
    projector(features()).square().mean().backward()
    for name, parameter in projector.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_reduce_mse_to_a_fixed_target(kind):
    projector = make(kind)
    x = features()
    target = torch.randn(
        BATCH, projector.num_output_tokens(TOKENS), OUT_DIM, generator=torch.Generator().manual_seed(2)
    )
    optimiser = torch.optim.Adam(projector.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = nn.functional.mse_loss(projector(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_mlp_depth_and_linear_layers():
    assert sum(isinstance(m, nn.Linear) for m in make("mlp").modules()) == 2
    deep = build_projector(IN_DIM, OUT_DIM, ProjectorConfig(kind="mlp", depth=3))
    assert sum(isinstance(m, nn.Linear) for m in deep.modules()) == 3
    assert sum(isinstance(m, nn.GELU) for m in deep.modules()) == 2
    assert sum(isinstance(m, nn.Linear) for m in make("linear").modules()) == 1


def test_query_projectors_inner_width_and_depth():
    projector = build_projector(
        IN_DIM, OUT_DIM, ProjectorConfig(kind="resampler", num_queries=3, depth=3, heads=2, width=16)
    )
    assert projector.queries.shape == (3, 16) and len(projector.blocks) == 3
    assert projector(features()).shape == (BATCH, 3, OUT_DIM)
    with pytest.raises(ConfigError, match="divisible by heads=5"):
        build_projector(IN_DIM, OUT_DIM, ProjectorConfig(kind="qformer", heads=5))


def test_wrong_input_width_is_reported():
    with pytest.raises(ValueError, match=rf"\(B, T, {IN_DIM}\)"):
        make("mlp")(torch.zeros(1, 4, IN_DIM + 1))


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(UnknownKindError) as info:
        build_projector(IN_DIM, OUT_DIM, ProjectorConfig(kind="telepathy"))
    message = str(info.value)
    assert "telepathy" in message and all(kind in message for kind in KINDS)


def test_register_a_custom_kind():
    class MeanPoolProjector(InputProjector):
        """Averages all tokens into one, then a linear map."""

        def __init__(self, in_dim, out_dim, cfg):
            super().__init__(in_dim, out_dim, cfg)
            self.proj = nn.Linear(in_dim, out_dim)

        def num_output_tokens(self, num_input_tokens):
            return 1

        def forward(self, x):
            return self.proj(x.mean(dim=1, keepdim=True))  # (B, T, D) -> (B, 1, D_out)

    PROJECTORS.register("mean_pool_test", MeanPoolProjector, replace=True)
    projector = build_projector(IN_DIM, OUT_DIM, ProjectorConfig(kind="mean_pool_test"))
    assert projector(features()).shape == (BATCH, 1, OUT_DIM)
    assert "mean_pool_test" in PROJECTORS.kinds()
    with pytest.raises(ValueError, match="already registered"):
        PROJECTORS.register("mean_pool_test", InputProjector)


def test_registry_is_shared_with_the_module():
    from modalities import input_projectors as projectors

    assert projectors.PROJECTORS is modalities.PROJECTORS
    assert PROJECTORS.get("qformer") is projectors.QFormerProjector


# -- joint (temporal) projection of video frames ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["resampler", "qformer"])
def test_time_embeddings_project_all_frames_jointly_and_see_their_order(kind):
    torch.manual_seed(0)
    cfg = ProjectorConfig(kind=kind, num_queries=3, depth=1, heads=2, width=16, time_embeddings=6)
    projector = build_projector(8, 12, cfg)
    torch.nn.init.normal_(projector.time)  # trained embeddings are not zero
    video = torch.randn(2, 5, 4, 8)  # (B, G frames, T tokens, D)
    out = projector.project_groups(video)
    assert out.shape == (2, 3, 12) and projector.num_group_tokens(5, 4) == 3
    # the frames' order matters (motion): reversing it changes the output, permuting tokens within frames does not
    assert not torch.allclose(projector.project_groups(video.flip(1)), out, atol=1e-5)
    torch.testing.assert_close(projector.project_groups(video.flip(2)), out, atol=1e-5, rtol=1e-5)


def test_without_time_embeddings_frames_are_projected_one_by_one():
    torch.manual_seed(0)
    projector = build_projector(8, 12, ProjectorConfig(kind="resampler", num_queries=3, depth=1, heads=2, width=16))
    video = torch.randn(2, 5, 4, 8)
    out = projector.project_groups(video)
    assert out.shape == (2, 15, 12) and projector.num_group_tokens(5, 4) == 15
    torch.testing.assert_close(out[:, 3:6], projector(video[:, 1]))  # frame 1's queries


def test_more_frames_than_time_embeddings_is_a_clear_error():
    projector = build_projector(
        8, 12, ProjectorConfig(kind="resampler", num_queries=3, heads=2, width=16, time_embeddings=4)
    )
    with pytest.raises(ValueError, match="time embeddings for 4 frames, got 5"):
        projector.project_groups(torch.randn(1, 5, 4, 8))
