"""The composite forward is written once (MMSystem.inputs -> LLM): the graph's reply and the trainer's loss
read the same logits for the same conversation."""

from __future__ import annotations

import json

import pytest
import torch

from modalities import samples
from orchestrator.assistant import Assistant
from orchestrator.system import MMSystem
from training.batches import collate
from training.objective import ProjectorObjective
from training.trainer import Trainer

QUESTION = "What colour is the square?"
ANSWER = "It is red."


@pytest.fixture
def system():
    """A private tiny-random system (hooks and wrappers below must not leak into the session's one)."""
    return MMSystem.from_config("tiny-random", device="cpu", load_generators=False)


def _capture_llm_calls(system, calls: list) -> None:
    """Record what the frozen LLM reads and returns on every call."""

    def hook(module, args, kwargs, output):
        calls.append({"embeds": kwargs["inputs_embeds"].detach().clone(), "logits": output.logits.detach().clone()})

    system.backbone.model.register_forward_hook(hook, with_kwargs=True)


def test_graph_and_trainer_produce_the_same_logits(system, tmp_path):
    png = samples.png_bytes(colour="red")
    (tmp_path / "red.png").write_bytes(png)
    row = {
        "id": "red",
        "image": "red.png",
        "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": ANSWER}],
    }
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n")

    # The trainer's path: data -> cached encoder features -> a batch -> ProjectorObjective (-> MMSystem.forward).
    run = Trainer(
        None, tmp_path / "chat.jsonl", None, system=system, train={"stage": "it", "cache_dir": str(tmp_path / "c")}
    )
    run.prepare()
    batch = collate(run.encoded, system.backbone.tokenizer.pad_token_id or 0, run.features, run.targets)
    forwards = []
    original = system.forward
    system.forward = lambda *a, **k: forwards.append(original(*a, **k)) or forwards[-1]  # spy: the objective's call
    with torch.no_grad():
        ProjectorObjective(system, align_weight=0.0)(batch)
    del system.forward
    assert len(forwards) == 1, "the objective runs the composite forward exactly once"
    (output, train_embeds) = forwards[0]

    # The graph's path: Assistant -> reason node -> MMSystem.respond -> the LLM's prefill.
    calls: list = []
    _capture_llm_calls(system, calls)
    with Assistant(system=system, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a") as bot:
        bot.chat(QUESTION, images=[png], allow=[], max_new_tokens=1)
    prefill = calls[0]
    prompt_len = prefill["embeds"].shape[1]

    # The same conversation lays out to the same tokens up to the reply, spliced with the same features ...
    ids = batch.input_ids[0].tolist()
    assert torch.equal(train_embeds[0, :prompt_len], prefill["embeds"][0])
    # ... and the LLM reads the same logits where the first reply token is predicted.
    keep = (batch.labels[0, 1:] != -100).nonzero().squeeze(1)  # the objective's logit columns
    column = (keep == prompt_len - 1).nonzero().item()  # logits at prompt_len - 1 predict the first answer token
    torch.testing.assert_close(output.logits[0, column], prefill["logits"][0, -1], rtol=1e-5, atol=1e-5)
    assert ids[prompt_len] == batch.labels[0, prompt_len]  # that column is labelled: the answer starts there
