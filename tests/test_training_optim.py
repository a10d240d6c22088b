"""training.optim: AdamW is fused where torch can fuse it, and the fused update is AdamW's update."""

import pytest
import torch
from torch import nn

from training.optim import adamw, can_fuse, fusing


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))


def _train(model: nn.Module, optimiser: torch.optim.Optimizer, steps: int = 20) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(8, 3, generator=gen)  # the labels follow a fixed linear rule, so there is something to learn
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen)
        y = (x @ teacher).argmax(1)
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def test_cpu_parameters_get_the_fused_kernel_and_fusing_false_gives_the_default():
    model = _model()
    assert adamw(model.parameters(), lr=1e-3).defaults["fused"] is True
    with fusing(False):
        assert not adamw(model.parameters(), lr=1e-3).defaults["fused"]
        with fusing(True):
            assert adamw(model.parameters(), lr=1e-3).defaults["fused"] is True
        assert not adamw(model.parameters(), lr=1e-3).defaults["fused"]
    assert adamw(model.parameters(), lr=1e-3).defaults["fused"] is True
    # the caller's own choice wins
    assert not adamw(model.parameters(), lr=1e-3, foreach=True).defaults["fused"]


def test_tensors_torch_cannot_fuse_fall_back_to_the_default_loop():
    assert not can_fuse([torch.zeros(2, device="meta")])
    assert not can_fuse([])
    assert not can_fuse([torch.zeros(2, dtype=torch.long)])
    meta = nn.Parameter(torch.zeros(2, device="meta"))
    assert not adamw([meta], lr=1e-3).defaults["fused"]


def test_fused_update_matches_the_default_and_the_loss_falls():
    reference, fused = _model(), _model()
    with fusing(False):
        slow = adamw(reference.parameters(), lr=3e-2, weight_decay=0.01)
    fast = adamw(fused.parameters(), lr=3e-2, weight_decay=0.01)
    a, b = _train(reference, slow), _train(fused, fast)
    assert b[-1] < 0.7 * b[0]
    assert a == pytest.approx(b, rel=1e-4)
    for p, q in zip(reference.parameters(), fused.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_param_groups_keep_their_own_settings_even_when_given_as_generators():
    model = _model()
    first, second = model[0], model[3]
    optimiser = adamw(
        [
            {"params": first.parameters(), "lr": 1e-2, "scale": 2.0},
            {"params": (p for p in second.parameters()), "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    assert optimiser.defaults["fused"] is True
    assert [len(g["params"]) for g in optimiser.param_groups] == [2, 2]
    assert optimiser.param_groups[0]["lr"] == 1e-2 and optimiser.param_groups[0]["scale"] == 2.0
    assert optimiser.param_groups[1]["weight_decay"] == 0.0
