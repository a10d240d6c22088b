"""The cross-attention family (Flamingo, Llama 3.2 Vision) beside the splice one: gated blocks inserted into the
frozen LLM, zero gates that leave it exact, the media mask, media keys/values computed once per turn, training of
the blocks, and the same graph for both architectures."""

from __future__ import annotations

import pytest
import torch

from core.config import FusionConfig, load_config
from core.errors import ConfigError, PromptError
from modalities import samples
from orchestrator.backbone import Media, PromptTurn, Text
from orchestrator.fusion import CrossAttention, FlamingoBlock, MediaContext, MllamaBlock, Splice
from orchestrator.system import MMSystem


def xattn_config(block: str = "flamingo", **fusion):
    """tiny-random with image input only, its resampler projector, and cross-attention before both LLM layers."""
    cfg = load_config("tiny-random")
    image = cfg.modalities["image"].model_copy(
        update={"projector": cfg.modalities["video"].projector.model_copy(update={"num_queries": 6})}
    )
    return cfg.model_copy(
        update={
            "name": "tiny-xattn",
            "modalities": {"image": image, "audio": cfg.modalities["audio"]},
            "generators": {"image": cfg.generators["image"]},
            "fusion": FusionConfig(kind="cross_attention", block=block, every=1, **fusion),
        }
    )


@pytest.fixture(scope="module")
def xsystem():
    return MMSystem.from_config(xattn_config(), device="cpu", load_generators=False)


def _open_gates(system, value: float = 0.8) -> None:
    with torch.no_grad():
        for block in system.fusion.blocks.values():
            block.attn_gate.fill_(value)
            block.ffn_gate.fill_(value)


def _logits(system, ids, features):
    with torch.no_grad():
        out, _ = system(ids, features)
    return out.logits


def _frozen_llm_logits(system, ids):
    with torch.no_grad():
        return system.backbone.model(inputs_embeds=system.backbone.embed_tokens(ids)).logits


def _image_prompt(system, *texts_and_images):
    """Token ids of a user turn: strings are text, ints are that many images."""
    segments = []
    for item in texts_and_images:
        segments += [Text(item)] if isinstance(item, str) else [Media("image", system.slots("image"))] * item
    return torch.tensor([system.backbone.build_prompt([PromptTurn("user", segments)]).input_ids])


def _features(system, n: int, seed: int = 0):
    images = [samples.square_image(c, 32) for c in ["red", "blue", "green", "yellow"][:n]]
    torch.manual_seed(seed)
    return {"image": system.encode("image", images)}  # (n, 1, T, D_enc)


def test_configs_choose_the_fusion_from_a_registry(xsystem):
    splice = MMSystem.from_config("tiny-random", device="cpu", load_generators=False)
    assert isinstance(splice.fusion, Splice) and isinstance(xsystem.fusion, CrossAttention)
    assert xsystem.slots("image") == 1 and splice.slots("image") == 16  # one placeholder marks a medium
    assert sorted(xsystem.fusion.blocks) == ["0", "1"]
    assert all(isinstance(b, FlamingoBlock) for b in xsystem.fusion.blocks.values())
    with pytest.raises(Exception, match="unknown fusion kind 'gated'"):
        MMSystem.from_config(
            xattn_config().model_copy(update={"fusion": FusionConfig(kind="gated")}), load_generators=False
        )
    with pytest.raises(ConfigError, match="within the LLM's 2 layers"):
        MMSystem.from_config(xattn_config(layers=[0, 5]), load_generators=False)


def test_zero_gates_leave_the_frozen_llm_exact_to_the_last_logit(xsystem):
    ids = _image_prompt(xsystem, "Look at this:", 1, "What colour is it?")
    logits = _logits(xsystem, ids, _features(xsystem, 1))
    assert torch.equal(logits, _frozen_llm_logits(xsystem, ids))  # bit for bit, every position


def test_open_gates_change_only_the_tokens_after_a_medium():
    system = MMSystem.from_config(xattn_config(), device="cpu", load_generators=False)
    _open_gates(system)
    ids = _image_prompt(system, "Look at this picture please:", 1, "What colour is it?")
    image_at = int((ids[0] == system.backbone.placeholder_ids["image"]).nonzero()[0])
    logits, frozen = _logits(system, ids, _features(system, 1)), _frozen_llm_logits(system, ids)
    assert torch.equal(logits[0, :image_at], frozen[0, :image_at])  # tokens before any medium: untouched
    assert (logits[0, image_at:] - frozen[0, image_at:]).abs().amax(-1).min() > 1e-4  # every later one moved
    # and what they read is the image: another picture gives other logits
    other = _logits(system, ids, {"image": _features(system, 2)["image"][1:]})
    assert not torch.allclose(other[0, image_at:], logits[0, image_at:])


def _context(rows: list[list[int]], n: int, t: int, dim: int, seed: int = 0, valid=None) -> MediaContext:
    torch.manual_seed(seed)
    rows_t = torch.tensor(rows)
    tokens = torch.randn(n, t, dim)
    valid_t = torch.ones(n, t, dtype=torch.bool) if valid is None else valid
    return MediaContext(
        tokens=tokens,
        valid=valid_t,
        present=torch.ones(n, t, dtype=torch.bool),
        owner=torch.zeros(n, dtype=torch.long),
        rows=rows_t,
        first=torch.arange(n),
    )


@pytest.mark.parametrize("kind", [FlamingoBlock, MllamaBlock])
def test_the_media_mask_each_token_reads_only_the_medium_most_recently_before_it(kind):
    torch.manual_seed(0)
    block = kind(32, 4, 2, 64, 1e-5)
    with torch.no_grad():
        block.attn_gate.fill_(1.0)
        block.ffn_gate.fill_(1.0)
    rows = [[-1, -1, 0, 0, 0, 1, 1]]  # two text tokens, medium 0 at 2, medium 1 at 5
    hidden = torch.randn(1, 7, 32)

    def run(ctx):
        ctx.begin_forward(7)
        with torch.no_grad():
            return block(hidden, ctx, "0")

    base = run(_context(rows, 2, 5, 32))
    changed = _context(rows, 2, 5, 32)
    changed.tokens[0] += torch.randn(5, 32)  # another first medium
    moved = run(changed)
    assert torch.equal(moved[0, 5:], base[0, 5:])  # after medium 1: only medium 1 is read
    assert not torch.allclose(moved[0, 2:5], base[0, 2:5])  # between the media: medium 0 is read
    if kind is FlamingoBlock:
        assert torch.equal(base[0, :2], hidden[0, :2])  # before any medium: left alone (Flamingo)
    else:  # Hugging Face Mllama: such a token attends to every medium of its sequence, its feed-forward is zeroed
        assert not torch.allclose(moved[0, :2], base[0, :2])
    # a token never reads a padding token (an unused tile): changing it changes nothing
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    masked = _context(rows, 2, 5, 32, valid=valid)
    padded = _context(rows, 2, 5, 32, valid=valid)
    padded.tokens[1, 3:] += 100.0
    assert torch.equal(run(masked)[0, 5:], run(padded)[0, 5:])


def test_rows_follow_the_placeholders_of_each_sequence(xsystem):
    ids = _image_prompt(xsystem, "a", 1, "b", 1, "c")
    ctx = xsystem.fusion.context(xsystem.backbone, ids, xsystem.media(_features(xsystem, 2)))
    marks = (ids[0] == xsystem.backbone.placeholder_ids["image"]).nonzero().squeeze(1).tolist()
    expected = [-1] * marks[0] + [0] * (marks[1] - marks[0]) + [1] * (ids.shape[1] - marks[1])
    assert ctx.rows[0].tolist() == expected
    with pytest.raises(PromptError, match="tokens: 2, features: 1"):
        xsystem.fusion.context(xsystem.backbone, ids, xsystem.media(_features(xsystem, 1)))


def test_media_are_encoded_and_their_keys_computed_once_per_turn(tmp_path):
    from orchestrator.assistant import Assistant

    system = MMSystem.from_config(xattn_config(), device="cpu", load_generators=False)
    _open_gates(system)
    calls = {"encoder": 0, "keys": 0, "steps": 0}
    system.encoder("image").register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    for block in system.fusion.blocks.values():
        block.k_proj.register_forward_hook(lambda *a: calls.__setitem__("keys", calls["keys"] + 1))
    system.backbone.model.register_forward_hook(lambda *a: calls.__setitem__("steps", calls["steps"] + 1))
    with Assistant(system=system, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a") as bot:
        reply = bot.chat("What is it?", images=[samples.png_bytes(colour="red")], max_new_tokens=8, min_new_tokens=8)
    assert reply.usage["completion_tokens"] == 8 and calls["steps"] >= 8  # a prefill and a step per token
    assert calls["encoder"] == 1  # the image is encoded once
    assert calls["keys"] == len(system.fusion.blocks)  # each block computes the media keys once, not per token


def test_a_text_only_turn_runs_the_frozen_llm(xsystem):
    ids = _image_prompt(xsystem, "Hello there, how are you?")
    system = MMSystem.from_config(xattn_config(), device="cpu", load_generators=False)
    _open_gates(system)
    assert torch.equal(_logits(system, ids, {}), _frozen_llm_logits(system, ids))


def test_decoding_with_captured_steps_is_refused(xsystem):
    assert xsystem.decoding_cache("auto") == "dynamic"
    with pytest.raises(ConfigError, match="reads the turn's media at every step"):
        xsystem.decoding_cache("graph")


def test_blocks_save_and_load_with_the_trainable_weights(tmp_path):
    system = MMSystem.from_config(xattn_config(), device="cpu", load_generators=False)
    _open_gates(system, 0.3)
    system.save_trainable(tmp_path / "w")
    state = system.trainable_state_dict()
    assert any(k.startswith("fusion.blocks.0.") for k in state)
    loaded = MMSystem.from_config(xattn_config(), device="cpu", load_generators=False, weights=tmp_path / "w")
    for key, value in loaded.trainable_state_dict().items():
        assert torch.equal(value, state[key]), key


def test_both_architectures_run_through_the_same_graph():
    from graphs.builder import GraphBuilder

    splice = load_config("tiny-random")
    xattn = splice.model_copy(update={"fusion": FusionConfig(kind="cross_attention")})
    nodes = set(GraphBuilder(splice).compile().get_graph().nodes)
    assert nodes == set(GraphBuilder(xattn).compile().get_graph().nodes)
    assert {"ingest", "encode", "reason", "generate_image", "merge"} <= nodes


@pytest.mark.integration
def test_pt_trains_the_blocks_and_the_resampler_and_answers_name_the_colour(tmp_path):
    """MM PT of a cross-attention system with the existing Trainer: only the blocks and the resampler move, the
    caption loss falls, and the trained system names the colour of squares it has never seen."""
    import json

    from orchestrator.assistant import Assistant
    from training import Trainer
    from training.audit import format_audit
    from training.toy import build_toy, toy_system_config

    toy = build_toy(tmp_path / "toy", n=48, progress=False)
    base = toy_system_config(toy["lm"])
    resampler = base.modalities["image"].projector.model_copy(
        update={"kind": "resampler", "num_queries": 8, "depth": 1, "heads": 4}
    )
    config = base.model_copy(
        update={
            "modalities": {"image": base.modalities["image"].model_copy(update={"projector": resampler})},
            "generators": {},
            "fusion": FusionConfig(kind="cross_attention", every=1),
        }
    )
    see = toy["pt"].parent / "see.jsonl"  # media paths are relative to the data file
    rows = [json.loads(line) for line in toy["pt"].read_text().splitlines()]
    see.write_text("".join(json.dumps(r) + "\n" for r in rows if "image" in r and "generate" not in r))
    system = MMSystem.from_config(config, device="cpu")
    frozen = {k: v.clone() for k, v in system.backbone.model.state_dict().items()}
    encoder = {k: v.clone() for k, v in system.encoder("image").state_dict().items()}
    blocks = {k: v.clone() for k, v in system.fusion.state_dict().items()}

    def trainer(out=None, **train):
        train = {"progress": False, "cache_dir": str(tmp_path / "c"), **train}
        return Trainer(None, see, out, system=system, train=train)

    before = trainer().evaluate()["lm_loss"]
    run = trainer(tmp_path / "pt", stage="pt", epochs=25, lr=3e-3)
    result = run.run()
    after = trainer().evaluate()["lm_loss"]
    assert result.finished and after <= 0.5 * before, (before, after)
    assert "cross-attention blocks" in format_audit(run.audit)
    assert all(torch.equal(v, frozen[k]) for k, v in system.backbone.model.state_dict().items())
    assert all(torch.equal(v, encoder[k]) for k, v in system.encoder("image").state_dict().items())
    assert any(not torch.equal(v, blocks[k]) for k, v in system.fusion.state_dict().items())
    assert all(float(b.attn_gate.detach().abs()) > 0 for b in system.fusion.blocks.values())  # the gates opened

    import random

    from modalities.media import encode_png
    from training.toy import COLOURS, random_square

    rng = random.Random(7)
    with Assistant.from_config(
        config, weights=tmp_path / "pt", db=tmp_path / "t.sqlite", artifacts=tmp_path / "a"
    ) as bot:
        answers = [
            bot.chat("", images=[encode_png(random_square(COLOURS[i % 4], rng))], thread_id=f"t{i}").text
            for i in range(24)
        ]
    hits = sum(COLOURS[i % 4] in a.replace(".", " ").split() for i, a in enumerate(answers))
    assert hits / len(answers) >= 0.8, answers  # chance: 0.25


def test_it_with_lora_trains_blocks_adapters_and_signal_rows_of_a_cross_attention_system(tmp_path):
    """MM IT with LoRA on a cross-attention system that can also draw: the blocks, the adapters, the signal rows
    and the output projector train; the LLM's own weights and the encoder do not; the folder loads back."""
    import json

    from training import Trainer
    from training.audit import format_audit

    config = xattn_config()
    png = tmp_path / "red.png"
    png.write_bytes(samples.png_bytes(colour="red"))
    rows = [
        {
            "image": "red.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is it? Then draw it."},
                {"from": "gpt", "value": "It is red. Here it is: <image>"},
            ],
            "output_captions": {"image": ["a red square"]},
        }
    ] * 4
    data = tmp_path / "it.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    system = MMSystem.from_config(config, device="cpu", conditioning_only=True)
    llm = {k: v.clone() for k, v in system.backbone.model.state_dict().items()}
    blocks = {k: v.clone() for k, v in system.fusion.state_dict().items()}
    train = {"progress": False, "cache_dir": str(tmp_path / "c"), "stage": "it", "max_steps": 3, "batch_size": 2}
    run = Trainer(None, data, tmp_path / "it", system=system, train={**train, "lora": True, "lora_lr": 1e-2})
    run.run()
    audit = format_audit(run.audit)
    assert "cross-attention blocks" in audit and "llm lora" in audit
    assert any(not torch.equal(v, blocks[k]) for k, v in system.fusion.state_dict().items())
    signal = sorted(system.backbone.signal_token_set)
    for key, value in system.backbone.model.state_dict().items():
        if "lora_" in key:
            continue
        before = llm[key.replace(".base_layer", "")]
        if value.dim() == 2 and value.shape[0] > max(signal):
            keep = torch.ones(value.shape[0], dtype=torch.bool)
            keep[signal] = False
            value, before = value[keep], before[keep]
        assert torch.equal(value, before), key
    loaded = MMSystem.from_config(config, device="cpu", conditioning_only=True, weights=tmp_path / "it")
    for key, value in system.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key
