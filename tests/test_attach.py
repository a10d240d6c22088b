"""Any-to-any on top of a peer (NExT-GPT style): ``mmgraph attach`` adds signal tokens, output projectors and a
generator to an imported understanding-only checkpoint; its answers stay exactly the peer's, MM PT trains only the
new parts, and the result saves and loads as one mmgraph system folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from core.artifacts import ArtifactRef
from core.turns import MediaPart, TextPart, Turn
from mmgraph.cli import main
from orchestrator.system import MMSystem

QUESTION = "What is in the picture?"
CAPTIONS = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("square", "circle", "triangle")]


def _image_part() -> MediaPart:
    return MediaPart(artifact=ArtifactRef(id="0" * 64, modality="image", mime="image/png", size=1))


def _understanding(system: MMSystem, image) -> tuple[torch.Tensor, list[int]]:
    """Logits of a question about ``image`` over the peer's own vocabulary, and the greedy reply's tokens."""
    conversation = [Turn(role="user", parts=(_image_part(), TextPart(text=QUESTION)))]
    features = {"image": system.encode("image", [image])}
    ids = torch.tensor([system.prompt(conversation).input_ids])
    with torch.no_grad():
        out, _ = system(ids, features)
    reply = system.respond(conversation, features, max_new_tokens=10)
    return out.logits, [i for segment in reply.segments for i in segment.token_ids]


@pytest.fixture(scope="module", params=["llava", "mllama"])
def peer(request):
    """A splice peer (LLaVA) and a cross-attention one (Llama 3.2 Vision)."""
    return f"@tiny/{request.param}"


@pytest.fixture(scope="module")
def attached(peer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("attached") / "system"
    assert main(["attach", peer, "--generators", "tiny-random", "--only", "image", "--out", str(folder)]) == 0
    return folder


def test_attach_writes_a_system_folder_whose_answers_are_the_peers(peer, attached):
    from test_peers import picture

    system = MMSystem.from_pretrained(attached, device="cpu", load_generators=False)
    peer = MMSystem.from_pretrained(peer, device="cpu", load_generators=False)
    assert system.config.peer is not None and list(system.config.generators) == ["image"]
    blocks = {"fusion"} if system.config.fusion.kind == "cross_attention" else set()
    assert system.imported == {"input_projectors.image"} | blocks  # the peer's parts: frozen, not in the file
    with safe_open(str(attached / "trainable.safetensors"), framework="pt") as handle:
        saved = set(handle.keys())
    assert not any(k.startswith(("input_projectors", "fusion")) for k in saved)
    assert system.backbone.signal_ids["image"] and not peer.backbone.signal_ids
    theirs, their_tokens = _understanding(peer, picture())
    ours, our_tokens = _understanding(system, picture())
    vocab = theirs.shape[-1]
    assert torch.equal(ours[..., :vocab], theirs)  # every logit of the peer's vocabulary, bit for bit
    assert our_tokens == their_tokens


def test_pt_trains_only_the_new_parts_and_the_result_generates(peer, attached, tmp_path):
    from test_peers import picture

    from orchestrator.assistant import Assistant
    from training import Trainer

    data = tmp_path / "pt.jsonl"
    data.write_text("".join(json.dumps({"caption": c, "generate": "image"}) + "\n" for c in CAPTIONS))
    system = MMSystem.from_pretrained(attached, device="cpu", conditioning_only=True)
    before = {k: v.clone() for k, v in system.backbone.model.state_dict().items()}
    tower = {k: v.clone() for k, v in system.encoder("image").state_dict().items()}
    projector = {k: v.clone() for k, v in system.input_projectors.state_dict().items()}
    blocks = {k: v.clone() for k, v in system.fusion.state_dict().items()}
    heads = {k: v.clone() for k, v in system.output_projectors.state_dict().items()}

    def trainer(out=None, **train):
        return Trainer(
            None, data, out, system=system, train={"progress": False, "cache_dir": str(tmp_path / "c"), **train}
        )

    align_before = trainer().evaluate()["align/image"]
    trainer(tmp_path / "pt", stage="pt", epochs=20, lr=3e-3, batch_size=4).run()
    align_after = trainer().evaluate()["align/image"]
    assert align_after <= 0.5 * align_before, (align_before, align_after)

    signal = sorted(system.backbone.signal_token_set)
    for key, value in system.backbone.model.state_dict().items():
        if value.shape[0] > max(signal) and value.dim() == 2:  # embedding / head: only the signal rows moved
            keep = torch.ones(value.shape[0], dtype=torch.bool)
            keep[signal] = False
            assert torch.equal(value[keep], before[key][keep]), key
            assert not torch.equal(value[signal], before[key][signal]), key
        else:
            assert torch.equal(value, before[key]), key
    assert all(torch.equal(v, tower[k]) for k, v in system.encoder("image").state_dict().items())
    assert all(torch.equal(v, projector[k]) for k, v in system.input_projectors.state_dict().items())
    assert all(torch.equal(v, blocks[k]) for k, v in system.fusion.state_dict().items())
    assert any(not torch.equal(v, heads[k]) for k, v in system.output_projectors.state_dict().items())

    # the trained folder loads as one system: it still answers as the peer, and now it draws
    peer = MMSystem.from_pretrained(peer, device="cpu", load_generators=False)
    trained = MMSystem.from_pretrained(tmp_path / "pt", device="cpu")
    theirs, their_tokens = _understanding(peer, picture())
    ours, our_tokens = _understanding(trained, picture())
    assert torch.equal(ours[..., : theirs.shape[-1]], theirs) and our_tokens == their_tokens
    with Assistant(system=trained, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a") as bot:
        reply = bot.chat("a red square", generate=["image"], max_new_tokens=8)
    assert [p.modality for p in reply.parts if isinstance(p, MediaPart)] == ["image"]


def test_attach_refuses_generators_the_system_has_or_the_donor_lacks(attached, tmp_path, capsys):
    assert (
        main(["attach", str(attached), "--generators", "tiny-random", "--only", "image", "--out", str(tmp_path)]) != 0
    )
    assert "already has generators ['image']" in capsys.readouterr().err
    assert (
        main(["attach", "@tiny/llava", "--generators", "tiny-random", "--only", "smell", "--out", str(tmp_path)]) != 0
    )
    assert "has no generators ['smell']" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_training_reads_each_images_instruction_for_an_instruction_aware_projector(tmp_path):
    """InstructBLIP made any-to-any: a training batch carries the text of the turn that shows each image, so its
    frozen Q-Former reads the instruction in training as it does in a chat turn (the same logits)."""
    from test_peers import picture

    from training import Trainer
    from training.batches import collate

    folder = tmp_path / "system"
    assert (
        main(["attach", "@tiny/instructblip", "--generators", "tiny-random", "--only", "image", "--out", str(folder)])
        == 0
    )
    picture().save(tmp_path / "pic.png")
    question = "Question: what is in the picture? Answer:"
    row = {
        "image": "pic.png",
        "conversations": [
            {"from": "human", "value": f"<image>{question}"},
            {"from": "gpt", "value": "a disc. <image>"},
        ],
        "output_captions": {"image": ["a red disc"]},
    }
    data = tmp_path / "it.jsonl"
    data.write_text(json.dumps(row) + "\n")
    system = MMSystem.from_pretrained(folder, device="cpu", conditioning_only=True)
    run = Trainer(None, data, None, system=system, train={"progress": False, "cache_dir": str(tmp_path / "c")})
    run.prepare()
    batch = collate(run.encoded, system.backbone.tokenizer.pad_token_id or 0, run.features, run.targets)
    assert batch.instructions == {"image": [question]}
    with torch.no_grad():
        trained, _ = system(batch.input_ids, batch.features, instructions=batch.instructions)
        conversation = [Turn(role="user", parts=(_image_part(), TextPart(text=question)))]
        features = {"image": system.encode("image", [picture()])}
        media = system.media(features, system.instructions(conversation))
        ids = torch.tensor([system.prompt(conversation, media).input_ids])
        chat, _ = system(ids, features, instructions=system.instructions(conversation))
    n = ids.shape[1]
    assert batch.input_ids[0, :n].tolist() == ids[0].tolist()
    torch.testing.assert_close(trained.logits[0, :n], chat.logits[0], rtol=1e-4, atol=1e-4)
    assert (
        Trainer(
            None,
            data,
            tmp_path / "it",
            system=system,
            train={"progress": False, "cache_dir": str(tmp_path / "c"), "stage": "it", "max_steps": 2},
        )
        .run()
        .finished
    )
