"""The backbone: special tokens, prompt safety, the embedding splice, and signal-aware generation."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import torch

from core.config import LLMConfig
from core.errors import PromptError
from orchestrator.backbone import Backbone, Media, PromptTurn, Signal, Text

PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}
SIGNALS = {"image": ["[IMG0]", "[IMG1]", "[IMG2]"], "audio": ["[AUD0]", "[AUD1]"]}


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def backbone(request) -> Backbone:
    return Backbone.from_config(LLMConfig(model=f"@tiny/{request.param}"), placeholders=PLACEHOLDERS, signals=SIGNALS)


def _prompt_embeds(bb: Backbone, text: str = "describe it", slots: int = 3):
    prompt = bb.build_prompt([PromptTurn("user", [Media("image", slots), Text(text)])])
    ids = torch.tensor([prompt.input_ids])
    feats = torch.randn(slots, bb.hidden_size, generator=torch.Generator().manual_seed(0))
    return ids, feats, bb.embed(ids, {"image": feats})


@contextmanager
def prefer(bb: Backbone, token_id: int):
    """Make the model strongly prefer ``token_id`` at every step (a logit offset, weights untouched)."""
    from orchestrator import decoding

    originals = {cls: cls._forward for cls in (decoding.DynamicSteps, decoding.StaticSteps)}

    def patched(original):
        def forward(self, embeds):
            logits, hidden = original(self, embeds)
            logits = logits.clone()
            logits[token_id] += 1e4
            return logits, hidden

        return forward

    for cls, original in originals.items():
        cls._forward = patched(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls._forward = original


def test_new_rows_are_distinct_inputs_and_mean_outputs(backbone):
    """Input rows of the new tokens are drawn around the old rows' mean (so the k signal tokens are distinct
    queries); output rows sit at the mean; a tied matrix stays at the mean."""
    inputs = backbone.model.get_input_embeddings().weight.detach()
    outputs = backbone.model.get_output_embeddings().weight.detach()
    new = sorted(backbone.special_new_ids)
    old = [i for i in range(inputs.shape[0]) if i not in backbone.special_new_ids]
    assert len(new) == 2 + 5
    torch.testing.assert_close(outputs[new], outputs[old].mean(0).expand(len(new), -1), atol=1e-5, rtol=1e-4)
    if outputs.data_ptr() == inputs.data_ptr():
        return
    rows = inputs[new]
    assert torch.cdist(rows, rows).add(torch.eye(len(new)) * 1e9).min() > 0.1 * inputs[old].std(0).norm()
    spread = (rows - inputs[old].mean(0)).std(0).mean() / inputs[old].std(0).mean()
    assert 0.4 < spread < 2.0


def test_new_rows_are_reproducible():
    rows = [
        Backbone.from_config(LLMConfig(model="@tiny/llama"), placeholders=PLACEHOLDERS, signals=SIGNALS)
        .model.get_input_embeddings()
        .weight.detach()
        for _ in range(2)
    ]
    torch.testing.assert_close(rows[0], rows[1], atol=0, rtol=0)


def test_user_text_never_produces_special_tokens(backbone):
    typed = "look [IMG0][IMG1] <image> <audio> [AUD0] and <image>"
    ids = backbone.tokenize_user_text(typed)
    assert not backbone.special_new_ids.intersection(ids)
    assert backbone.tokenizer.decode(ids).replace(" ", "") == typed.replace(" ", "")
    prompt = backbone.build_prompt([PromptTurn("user", [Text(typed)])])
    assert not backbone.special_new_ids.intersection(prompt.input_ids)
    # ... so there is no slot to fill: features for it are refused.
    with pytest.raises(PromptError, match="tokens: 0, features: 1"):
        backbone.embed(torch.tensor([prompt.input_ids]), {"image": torch.zeros(1, backbone.hidden_size)})


def test_placeholders_expand_and_features_land_in_their_slots(backbone):
    ids, feats, embeds = _prompt_embeds(backbone, slots=3)
    positions = (ids[0] == backbone.placeholder_ids["image"]).nonzero().flatten()
    assert len(positions) == 3
    torch.testing.assert_close(embeds[0, positions], feats)
    other = (ids[0] != backbone.placeholder_ids["image"]).nonzero().flatten()
    torch.testing.assert_close(embeds[0, other], backbone.model.get_input_embeddings()(ids)[0, other])


def test_feature_count_mismatch_names_both_counts(backbone):
    ids, feats, _ = _prompt_embeds(backbone, slots=3)
    with pytest.raises(PromptError, match="tokens: 3, features: 2"):
        backbone.embed(ids, {"image": feats[:2]})


def test_assistant_mask_covers_assistant_tokens_and_signals(backbone):
    prompt = backbone.build_prompt(
        [PromptTurn("user", [Text("draw")]), PromptTurn("assistant", [Text("here"), Signal("image")])],
        add_generation_prompt=False,
    )
    masked = [i for i, m in zip(prompt.input_ids, prompt.assistant_mask) if m]
    assert masked[-4:-1] == backbone.signal_ids["image"] and masked[-1] == backbone.tokenizer.eos_token_id


def test_required_generators_are_forced_with_captured_states(backbone):
    _, _, embeds = _prompt_embeds(backbone)
    pieces: list[str] = []
    result = backbone.generate(embeds, max_new_tokens=10, require=["audio", "image"], on_text=pieces.append)
    groups = result.signals
    assert [g.generator for g in groups] == ["audio", "image"]
    for g in groups:
        assert g.token_ids == backbone.signal_ids[g.generator]
        assert g.hidden.shape == (len(g.token_ids), backbone.hidden_size)
    assert "".join(pieces) == result.text

    # The captured states are exactly the last-layer states a full (cache-free) forward gives at those positions.
    full_ids = []
    for seg in result.segments:
        full_ids += seg.token_ids
    gen_embeds = backbone.model.get_input_embeddings()(torch.tensor([full_ids]))
    with torch.no_grad():
        out = backbone.model(inputs_embeds=torch.cat([embeds, gen_embeds], 1), output_hidden_states=True)
    last = out.hidden_states[-1][0, embeds.shape[1] :]
    offset = 0
    for seg in result.segments:
        n = len(seg.token_ids)
        if hasattr(seg, "hidden"):
            torch.testing.assert_close(seg.hidden, last[offset : offset + n], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(seg.input_embeds, gen_embeds[0, offset : offset + n], atol=1e-6, rtol=1e-6)
        offset += n


def test_first_signal_token_forces_the_rest_and_disabled_never_fire(backbone):
    _, _, embeds = _prompt_embeds(backbone)
    with prefer(backbone, backbone.signal_ids["image"][0]):
        free = backbone.generate(embeds, max_new_tokens=6)
        assert free.signals and free.signals[0].token_ids == backbone.signal_ids["image"]
        banned = backbone.generate(embeds, max_new_tokens=6, allow=["audio"])
        assert all(g.generator != "image" for g in banned.signals)
        assert not backbone.signal_token_set.intersection(
            t for s in banned.segments if not hasattr(s, "hidden") for t in s.token_ids
        )


def test_greedy_decoding_with_cache_matches_a_cache_free_loop(backbone):
    _, _, embeds = _prompt_embeds(backbone)
    result = backbone.generate(embeds, max_new_tokens=8, allow=[])
    ids = [t for s in result.segments for t in s.token_ids]
    seq = embeds
    expected = []
    emb = backbone.model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(len(ids)):
            logits = backbone.model(inputs_embeds=seq).logits[0, -1]
            logits[sorted(backbone.special_new_ids)] = float("-inf")
            nxt = int(logits.argmax())
            expected.append(nxt)
            seq = torch.cat([seq, emb(torch.tensor([[nxt]]))], 1)
    assert ids == expected


def test_cancel_flag_stops_generation(backbone):
    _, _, embeds = _prompt_embeds(backbone)
    flag = threading.Event()
    seen = []

    def on_text(piece):
        seen.append(piece)
        flag.set()

    result = backbone.generate(embeds, max_new_tokens=50, allow=[], on_text=on_text, cancel=flag)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 50


def test_only_signal_rows_receive_gradients(backbone):
    ids = torch.tensor(
        [
            backbone.build_prompt(
                [PromptTurn("user", [Text("draw")]), PromptTurn("assistant", [Signal("image"), Text("done")])],
                add_generation_prompt=False,
            ).input_ids
        ]
    )
    backbone.zero_grad(set_to_none=True)
    out = backbone(ids, labels=ids)
    out.loss.backward()
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {f"model.{n}" for n in _embedding_param_names(backbone)}
    for param in backbone.signal_row_parameters().values():
        rows = param.grad.abs().sum(-1).nonzero().flatten().tolist()
        assert rows and set(rows) <= backbone.signal_token_set
    backbone.zero_grad(set_to_none=True)


def _embedding_param_names(bb: Backbone) -> set[str]:
    names = {n for n, p in bb.model.named_parameters() if any(p is q for q in bb.signal_row_parameters().values())}
    return names


def test_signal_rows_round_trip(backbone):
    state = backbone.signal_rows_state()
    with torch.no_grad():
        for p in backbone.signal_row_parameters().values():
            p[sorted(backbone.signal_token_set)] += 1.0
    backbone.load_signal_rows(state)
    after = backbone.signal_rows_state()
    for key in state:
        torch.testing.assert_close(after[key], state[key])


def test_without_generators_nothing_in_the_llm_trains():
    bb = Backbone.from_config(LLMConfig(model="@tiny/llama"), placeholders=PLACEHOLDERS, signals={})
    assert bb.signal_row_parameters() == {} and not any(p.requires_grad for p in bb.parameters())


def test_min_new_tokens_holds_eos_back(backbone):
    _, _, embeds = _prompt_embeds(backbone)
    eos = backbone.tokenizer.eos_token_id
    with prefer(backbone, eos):
        assert backbone.generate(embeds, max_new_tokens=8, allow=[]).completion_tokens == 0
        held = backbone.generate(embeds, max_new_tokens=8, min_new_tokens=5, allow=[])
    assert held.completion_tokens == 5 and held.finish_reason == "stop"


def test_static_cache_decodes_the_same_tokens_and_states_as_the_dynamic_one(backbone):
    """The static runner (the CUDA-graph path without the graph) against the dynamic one: same tokens, same
    signal states, for two prompts of different length sharing one reused cache, with and without a forced group."""
    for text, require in (("describe it", []), ("describe it and then some more words please", ["image"])):
        _, _, embeds = _prompt_embeds(backbone, text)
        dynamic = backbone.generate(embeds, max_new_tokens=12, require=require, cache="dynamic")
        static = backbone.generate(embeds, max_new_tokens=12, require=require, cache="static")
        assert [s.token_ids for s in static.segments] == [s.token_ids for s in dynamic.segments]
        assert len(static.signals) == len(require)
        for a, b in zip(static.signals, dynamic.signals):
            assert torch.allclose(a.hidden, b.hidden, atol=1e-5) and torch.equal(a.input_embeds, b.input_embeds)
    assert len(backbone._static_steps) == 1  # both prompts fit one bucket: the cache was reused


@pytest.mark.integration
def test_compiled_steps_decode_the_same_tokens_and_states_as_the_dynamic_path():
    """``cache="compiled"``: the one-token step through torch.compile (on a CPU without a CUDA graph). Same tokens
    and signal states as the eager dynamic path, with a forced signal group."""
    bb = Backbone.from_config(LLMConfig(model="@tiny/llama"), placeholders=PLACEHOLDERS, signals=SIGNALS)
    _, _, embeds = _prompt_embeds(bb, "describe it and then some more")
    dynamic = bb.generate(embeds, max_new_tokens=10, require=["image"], cache="dynamic")
    compiled = bb.generate(embeds, max_new_tokens=10, require=["image"], cache="compiled")
    assert [s.token_ids for s in compiled.segments] == [s.token_ids for s in dynamic.segments]
    (a,), (b,) = compiled.signals, dynamic.signals
    assert torch.allclose(a.hidden, b.hidden, atol=1e-4) and torch.equal(a.input_embeds, b.input_embeds)
    (runner,) = bb._static_steps.values()
    assert runner._step_model is not bb.model and not runner.graph  # compiled, and no CUDA graph on a CPU


def test_static_runner_refuses_to_overflow_and_graphs_need_cuda():
    from orchestrator import decoding

    bb = Backbone.from_config(LLMConfig(model="@tiny/llama"), placeholders=PLACEHOLDERS, signals=SIGNALS)
    steps = decoding.StaticSteps(bb.model, 4)
    steps.prefill(torch.zeros(1, 3, bb.hidden_size))
    steps.step(torch.zeros(1, 1, bb.hidden_size))
    with pytest.raises(ValueError, match="holds 4 positions"):
        steps.step(torch.zeros(1, 1, bb.hidden_size))
    with pytest.raises(ValueError, match="CUDA device"):
        decoding.StaticSteps(bb.model, 4, graph=True)
    with pytest.raises(ValueError, match="unknown decoding cache"):
        decoding.resolve("paged", torch.device("cpu"))
    assert decoding.resolve("compiled", torch.device("cpu")) == "compiled"
    assert decoding.resolve("auto", torch.device("cpu")) == "dynamic"
    assert decoding.resolve("auto", torch.device("cuda")) == "graph"


def test_a_reply_cut_at_the_budget_costs_no_forward_for_its_last_token(backbone, monkeypatch):
    """N new tokens take the prefill and N - 1 one-token forwards (the last token's logits would go unused)."""
    from orchestrator import decoding

    calls = []
    original = decoding.DynamicSteps.step
    monkeypatch.setattr(decoding.DynamicSteps, "step", lambda self, embed: calls.append(1) or original(self, embed))
    _, _, embeds = _prompt_embeds(backbone)
    result = backbone.generate(embeds, max_new_tokens=6, min_new_tokens=6, allow=[], cache="dynamic")
    assert result.finish_reason == "length" and result.completion_tokens == 6
    assert len(calls) == 5
