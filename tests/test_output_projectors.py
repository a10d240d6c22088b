"""Output projectors: signal-token states (B, k, D_llm) -> a generator's conditioning tensors, and the alignment
loss that trains them (GILL / NExT-GPT)."""

from __future__ import annotations

import pytest
import torch

from core.config import OutputProjectorConfig
from core.registry import UnknownKindError
from generators import OUTPUT_PROJECTORS, ConditioningSpec, alignment_loss, build_output_projector

LLM_DIM, K = 24, 4
KINDS = ["mlp", "transformer"]
# One Stable-Diffusion-like spec, and AudioLDM-2-like pairs of specs.
SPEC_SETS = {
    "sd": [ConditioningSpec("prompt_embeds", 77, 32)],
    "audioldm2": [ConditioningSpec("prompt_embeds", 16, 32), ConditioningSpec("generated_prompt_embeds", 8, 16)],
}
CAPTIONS = ["a red square", "a blue circle moving left", "two short beeps of a high tone", "a green star spinning"]


def _projector(kind: str, specs, **overrides):
    cfg = OutputProjectorConfig(kind=kind, width=32, layers=1, heads=4, **overrides)
    return build_output_projector(LLM_DIM, K, specs, cfg)


@pytest.mark.parametrize("specs", list(SPEC_SETS.values()), ids=list(SPEC_SETS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_maps_signal_states_to_every_spec(kind, specs, batch):
    projector = _projector(kind, specs)
    out = projector(torch.randn(batch, K, LLM_DIM), torch.randn(batch, K, LLM_DIM))
    assert {name: tuple(t.shape) for name, t in out.items()} == {s.name: (batch, s.length, s.dim) for s in specs}


@pytest.mark.parametrize("kind", KINDS)
def test_input_embeddings_are_added(kind):
    torch.manual_seed(0)
    projector = _projector(kind, SPEC_SETS["sd"])
    hidden, embeds = torch.randn(2, K, LLM_DIM), torch.randn(2, K, LLM_DIM)
    with torch.no_grad():
        summed = projector(hidden, embeds)["prompt_embeds"]
        assert torch.allclose(summed, projector(hidden + embeds)["prompt_embeds"], atol=1e-6)
        projector.add_input_embeddings = False
        assert torch.allclose(projector(hidden, embeds)["prompt_embeds"], projector(hidden)["prompt_embeds"])


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_to_parameters_and_signal_states(kind):
    projector = _projector(kind, SPEC_SETS["audioldm2"])
    hidden = torch.randn(2, K, LLM_DIM, requires_grad=True)
    target = {s.name: torch.randn(2, s.length, s.dim) for s in projector.specs}
    alignment_loss(projector(hidden), target).backward()
    for name, param in projector.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_transformer_has_one_query_set_per_spec():
    projector = _projector("transformer", SPEC_SETS["audioldm2"])
    assert {name: tuple(q.shape) for name, q in projector.queries.items()} == {
        "prompt_embeds": (16, 32),
        "generated_prompt_embeds": (8, 32),
    }
    assert len(projector.transformer.encoder.layers) == 1 and len(projector.transformer.decoder.layers) == 1


@pytest.fixture(scope="module")
def caption_features():
    """The tiny Stable Diffusion text encoder's features of a few captions: (4, 77, 32)."""
    from orchestrator.tiny import tiny_clip_text

    tokenizer, text_encoder = tiny_clip_text(seed=0)
    ids = tokenizer(
        CAPTIONS, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_alignment_loss(kind, caption_features):
    torch.manual_seed(0)
    specs = [ConditioningSpec("prompt_embeds", 77, 32), ConditioningSpec("extra", 8, 16)]
    projector = _projector(kind, specs)
    signals = torch.randn(len(CAPTIONS), K, LLM_DIM), torch.randn(len(CAPTIONS), K, LLM_DIM)
    target = {"prompt_embeds": caption_features, "extra": torch.randn(len(CAPTIONS), 8, 16)}
    optimizer = torch.optim.Adam(projector.parameters(), lr=3e-3)
    with torch.no_grad():
        initial = alignment_loss(projector(*signals), target).item()
    for _ in range(300):
        loss = alignment_loss(projector(*signals), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = alignment_loss(projector(*signals), target).item()
    assert final <= 0.2 * initial, (initial, final)


def test_alignment_loss_is_mean_token_l2_summed_over_specs():
    torch.manual_seed(0)
    pred = {"a": torch.randn(2, 5, 3), "b": torch.randn(2, 4, 6)}
    target = {"a": torch.randn(2, 5, 3), "b": torch.randn(2, 4, 6)}
    expected = sum(((pred[n] - target[n]) ** 2).sum(-1).sqrt().mean() for n in pred)
    assert torch.allclose(alignment_loss(pred, target), expected)
    exact = {"a": pred["a"].clone().requires_grad_(True)}
    loss = alignment_loss(exact, {"a": pred["a"]})
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(exact["a"].grad).all()
    with pytest.raises(ValueError):
        alignment_loss(pred, {"a": target["a"]})


def test_rejects_wrong_signal_shape():
    projector = _projector("mlp", SPEC_SETS["sd"])
    with pytest.raises(ValueError, match=rf"\(B, {K}, {LLM_DIM}\)"):
        projector(torch.randn(1, K + 1, LLM_DIM))


def test_unknown_kind_raises():
    assert {"mlp", "transformer"} <= set(OUTPUT_PROJECTORS.kinds())
    with pytest.raises(UnknownKindError, match="no_such_projector"):
        _projector("no_such_projector", SPEC_SETS["sd"])
