"""MM PT / MM IT on a toy world of coloured squares: losses fall, captions become right, frozen weights stay
bit-identical, caches are reused, runs resume exactly, and trained folders load into an Assistant."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from training.toy import COLOURS, build_toy, random_square, toy_system_config, write_colour_squares


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy world: a tiny Llama taught the toy language, 48 images, PT and IT data, a system config."""
    return build_toy(tmp_path_factory.mktemp("toy"), n=48, progress=False)


def make_system(toy, full: bool = False):
    from orchestrator.system import MMSystem

    return MMSystem.from_config(toy_system_config(toy["lm"], full=full), device="cpu")


def trainer(system, data, out, cache, **train):
    from training import Trainer

    train = {"progress": False, "cache_dir": str(cache), **train}
    return Trainer(None, data, out, system=system, train=train)


def split_rows(path: Path, folder: Path) -> tuple[Path, Path]:
    """Encoder-side (image -> caption) and decoder-side (caption -> image) rows of a PT file, as two files."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    see, draw = folder / "see.jsonl", folder / "draw.jsonl"
    see.write_text("".join(json.dumps(r) + "\n" for r in rows if "image" in r))
    draw.write_text("".join(json.dumps(r) + "\n" for r in rows if "generate" in r))
    return see, draw


def caption_accuracy(bot, n: int = 40, seed: int = 123) -> tuple[float, list[str]]:
    """Greedy answers about freshly drawn squares; the share that names the square's colour."""
    from modalities.media import encode_png

    rng = random.Random(seed)
    answers, hits = [], 0
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        reply = bot.chat("", images=[encode_png(random_square(colour, rng))], thread_id=f"held-out-{i}")
        answers.append(reply.text)
        hits += colour in reply.text.replace(".", " ").split()
    return hits / n, answers


@pytest.mark.integration
def test_pt_lowers_caption_and_alignment_losses_and_captions_name_the_colour(toy, tmp_path):
    from orchestrator.assistant import Assistant

    held_out = write_colour_squares(tmp_path / "held-out", 16, seed=1)
    see, draw = split_rows(held_out["pt"], tmp_path / "held-out")
    system = make_system(toy)
    cache = tmp_path / "cache"

    def losses():
        caption = trainer(system, see, None, cache).evaluate()["lm_loss"]
        align = trainer(system, draw, None, cache).evaluate()["align/image"]
        return caption, align

    caption_before, align_before = losses()
    result = trainer(system, toy["pt"], tmp_path / "pt", cache, stage="pt", epochs=30, lr=3e-3).run()
    caption_after, align_after = losses()

    assert result.finished and result.steps == 30 * (96 // 8)
    assert caption_after <= 0.5 * caption_before, (caption_before, caption_after)
    assert align_after <= 0.2 * align_before, (align_before, align_after)

    # The output folder loads into an Assistant and changes its answers: untrained it cannot name colours.
    config = toy_system_config(toy["lm"])
    with (
        Assistant.from_config(
            config, weights=tmp_path / "pt", db=tmp_path / "a.sqlite", artifacts=tmp_path / "art"
        ) as trained,
        Assistant.from_config(config, db=tmp_path / "b.sqlite", artifacts=tmp_path / "art") as untrained,
    ):
        accuracy, answers = caption_accuracy(trained)
        base_accuracy, base_answers = caption_accuracy(untrained)
    assert accuracy >= 0.8, answers  # chance: 0.25
    assert base_accuracy <= 0.5, base_answers
    assert answers != base_answers


def _frozen_snapshot(system) -> dict[str, torch.Tensor]:
    """Every frozen tensor of the system; the embedding matrices without their signal rows."""
    snap = {}
    for name in system.modality_names:
        for key, value in system.encoder(name).state_dict().items():
            snap[f"encoder.{name}.{key}"] = value.clone()
    signal = sorted(system.backbone.signal_token_set)
    keep = torch.ones(system.backbone.model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    keep[signal] = False
    masked = {id(p) for p in system.backbone.signal_row_parameters().values()}
    for key, param in system.backbone.model.named_parameters():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer", "")  # LoRA wraps a linear layer and renames its weight
        snap[f"llm.{key}"] = (param[keep] if id(param) in masked else param).detach().clone()
    for name in system.generator_names:
        for i, param in enumerate(system.generator(name).parameters()):
            snap[f"generator.{name}.{i}"] = param.detach().clone()
    return snap


def _write_any_to_any_data(folder: Path) -> tuple[Path, Path]:
    from modalities import samples

    (folder / "media").mkdir(parents=True)
    (folder / "media/red.png").write_bytes(samples.png_bytes(colour="red"))
    (folder / "media/tone.wav").write_bytes(samples.wav_bytes(freq=440.0, seconds=1.0))
    (folder / "media/blue.mp4").write_bytes(samples.mp4_bytes(colour="blue", frames=6))
    pt = [
        {"image": "media/red.png", "caption": "a red square"},
        {"audio": "media/tone.wav", "caption": "a tone"},
        {"video": "media/blue.mp4", "caption": "a blue square moving"},
        {"caption": "a red square", "generate": "image"},
        {"caption": "a tone", "generate": "audio"},
        {"caption": "a blue square moving", "generate": "video"},
    ]
    it = [
        {
            "image": "media/red.png",
            "audio": "media/tone.wav",
            "video": "media/blue.mp4",
            "conversations": [
                {"from": "human", "value": "<image>\n<audio>\n<video>\nDescribe them, then draw, play and animate."},
                {"from": "gpt", "value": "A red square, a tone, a moving square. <image> <audio> <video>"},
            ],
            "output_captions": {"image": ["a red square"], "audio": ["a tone"], "video": ["a blue square moving"]},
        },
        {
            "conversations": [
                {"from": "human", "value": "Draw a red square."},
                {"from": "gpt", "value": "Here it is: <image>"},
                {"from": "human", "value": "Now play a tone."},
                {"from": "gpt", "value": "Listen: <audio>"},
            ],
            "output_captions": {"image": ["a red square"], "audio": ["a tone"]},
        },
    ]
    for name, rows in (("pt.jsonl", pt), ("it.jsonl", it)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "pt.jsonl", folder / "it.jsonl"


def test_pt_then_it_with_lora_changes_only_the_allowed_tensors(toy, tmp_path):
    pt, it = _write_any_to_any_data(tmp_path / "data")
    system = make_system(toy, full=True)
    frozen_before = _frozen_snapshot(system)
    trainable_before = system.trainable_state_dict()

    trainer(system, pt, tmp_path / "pt", tmp_path / "cache", stage="pt", max_steps=3, batch_size=3).run()
    run = trainer(
        system, it, tmp_path / "it", tmp_path / "cache", stage="it", max_steps=3, batch_size=2, lora=True, lora_lr=1e-2
    )
    run.run()
    audit = {row.component: row for row in run.audit}
    assert audit["llm"].trainable == 0 and audit["llm lora"].trainable > 0
    assert all(audit[f"encoder {m}"].trainable == 0 for m in ("image", "audio"))
    assert all(audit[f"generator {g}"].trainable == 0 for g in ("image", "video", "audio"))

    frozen_after = _frozen_snapshot(system)
    assert frozen_after.keys() == frozen_before.keys()
    changed = [k for k in frozen_before if not torch.equal(frozen_before[k], frozen_after[k])]
    assert changed == []

    trainable_after = system.trainable_state_dict()
    for prefix in (
        "input_projectors.image",
        "input_projectors.audio",
        "input_projectors.video",
        "output_projectors.image",
        "output_projectors.audio",
        "output_projectors.video",
        "signal_rows.embed_tokens",
        "signal_rows.lm_head",
    ):
        keys = [k for k in trainable_after if k.startswith(prefix)]
        assert keys and any(not torch.equal(trainable_before[k], trainable_after[k]) for k in keys), prefix
    lora = {k: v for k, v in trainable_after.items() if k.startswith("lora.")}
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero


def test_second_epoch_and_second_run_call_no_encoder_and_a_deleted_cache_is_rebuilt(toy, tmp_path):
    system = make_system(toy)
    calls = {"encoder": 0, "text": 0}
    system.encoder("image").register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1))
    tool = system.generator("image")
    encode_text = tool.encode_text

    def counting_encode_text(prompts):
        calls["text"] += 1
        return encode_text(prompts)

    tool.encode_text = counting_encode_text
    per_step: list[int] = []
    cache = tmp_path / "cache"

    def run(out, **kw):
        from training import Trainer

        return Trainer(
            None,
            toy["pt"],
            out,
            system=system,
            callbacks=[lambda t, s, logs: per_step.append(calls["encoder"])],
            train={"progress": False, "cache_dir": str(cache), "epochs": 2, **kw},
        ).run()

    run(tmp_path / "a")
    first = dict(calls)
    assert first["encoder"] == 3  # 48 distinct images in batches of 16
    assert first["text"] == 1  # 4 distinct captions: each is encoded once
    assert len(per_step) == 2 * 12 and set(per_step) == {3}  # no encoder call in either epoch

    run(tmp_path / "b")  # a second run with the same cache: nothing to compute
    assert calls == first

    shutil.rmtree(cache)
    run(tmp_path / "c")
    assert calls == {"encoder": 6, "text": 2}
    assert len(list((cache).rglob("*.safetensors"))) >= 2


def test_stopping_and_resuming_gives_the_weights_of_an_uninterrupted_run(toy, tmp_path):
    cache = tmp_path / "cache"
    settings = dict(stage="it", max_steps=6, batch_size=8, lr=3e-3, lora=True, lora_lr=1e-2)

    whole = make_system(toy)
    trainer(whole, toy["it"], tmp_path / "whole", cache, **settings).run()

    first = make_system(toy)
    stopped = trainer(first, toy["it"], tmp_path / "sliced", cache, stop_after=3, **settings).run()
    assert not stopped.finished and stopped.steps == 3
    assert not (tmp_path / "sliced" / "trainable.safetensors").exists()

    from training import Trainer

    second = make_system(toy)
    resumed = Trainer(
        None,
        toy["it"],
        tmp_path / "sliced",
        system=second,
        resume=True,
        train={"progress": False, "cache_dir": str(cache), **settings},
    ).run()
    assert resumed.finished and [h["step"] for h in resumed.history] == [4, 5, 6]

    expected, got = whole.trainable_state_dict(), second.trainable_state_dict()
    assert expected.keys() == got.keys()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    log = [json.loads(line) for line in (tmp_path / "sliced" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]


def test_lora_weights_round_trip_through_the_output_folder(toy, tmp_path):
    from orchestrator.system import MMSystem

    system = make_system(toy)
    system.backbone.add_lora(r=4, alpha=8)
    with torch.no_grad():
        for param in system.backbone.lora_parameters().values():
            param.normal_(0, 0.05)
    system.save_trainable(tmp_path / "w")
    loaded = MMSystem.from_config(toy_system_config(toy["lm"]), weights=tmp_path / "w", device="cpu")
    assert loaded.backbone.lora_settings == system.backbone.lora_settings
    ids = torch.tensor([[1, 5, 9, 14, 20]])
    with torch.no_grad():
        assert torch.allclose(system.backbone.model(input_ids=ids).logits, loaded.backbone.model(input_ids=ids).logits)
        plain = make_system(toy).backbone.model(input_ids=ids).logits
    assert not torch.allclose(plain, loaded.backbone.model(input_ids=ids).logits)


def test_freeze_audit_refuses_a_trainable_llm_weight(toy, tmp_path):
    from training import FreezeError, freeze_audit
    from training.audit import format_audit

    system = make_system(toy)
    rows = freeze_audit(system)
    table = format_audit(rows)
    assert "input projector image" in table and "signal rows" in table
    by_name = {r.component: r for r in rows}
    assert by_name["signal rows"].trainable == len(system.backbone.signal_token_set) * system.backbone.hidden_size * 2
    assert by_name["llm"].trainable == 0 and by_name["llm"].total > 0

    layer = system.backbone.model.model.layers[0].mlp.up_proj.weight
    layer.requires_grad_(True)
    with pytest.raises(FreezeError, match="up_proj"):
        trainer(system, toy["pt"], tmp_path / "x", tmp_path / "cache").run()
    assert not (tmp_path / "x").exists()  # refused before anything was written
    layer.requires_grad_(False)
    next(system.encoder("image").parameters()).requires_grad_(True)
    with pytest.raises(FreezeError, match="encoder image"):
        freeze_audit(system)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(toy, tmp_path):
    from training.batches import collate
    from training.objective import ProjectorObjective

    run = trainer(make_system(toy), toy["it"], None, tmp_path / "cache", batch_size=4)
    run.prepare()
    system = run.system
    batch = collate(run.encoded[:4], 0, run.features, run.targets)
    objective = ProjectorObjective(system)

    def loss_and_grad():
        system.zero_grad(set_to_none=True)
        loss, _ = objective(batch)
        loss.backward()
        return loss.detach(), next(system.input_projectors["image"].parameters()).grad.clone()

    plain = loss_and_grad()
    run._enable_gradient_checkpointing()
    assert system.backbone.model.is_gradient_checkpointing
    checkpointed = loss_and_grad()
    run._disable_gradient_checkpointing()
    assert torch.allclose(plain[0], checkpointed[0], atol=1e-6)
    assert torch.allclose(plain[1], checkpointed[1], atol=1e-6)


def test_lm_loss_on_labelled_columns_only_equals_the_full_logits_loss(toy, tmp_path):
    """The objective runs the LM head only where a label follows; loss and gradients match the plain
    full-sequence cross-entropy (and the batch really has unlabelled columns, so the two paths differ)."""
    import torch.nn.functional as F

    from training.batches import collate
    from training.objective import ProjectorObjective

    run = trainer(make_system(toy), toy["it"], None, tmp_path / "cache", batch_size=4)
    run.prepare()
    system = run.system
    batch = collate(run.encoded[:4], 0, run.features, run.targets)
    labelled = (batch.labels[:, 1:] != -100).any(0)
    assert 0 < int(labelled.sum()) < labelled.numel()
    projector = next(system.input_projectors["image"].parameters())

    system.zero_grad(set_to_none=True)
    loss, parts = ProjectorObjective(system, align_weight=0.0)(batch)
    loss.backward()
    ours = parts["lm_loss"], projector.grad.clone()

    system.zero_grad(set_to_none=True)
    features = {m: system.project(m, x).flatten(0, 1) for m, x in batch.features.items()}
    embeds = system.backbone.embed(batch.input_ids, features)
    logits = system.backbone.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits[:, :-1]
    full = F.cross_entropy(logits.float().flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=-100)
    full.backward()
    assert torch.allclose(ours[0], full.detach(), rtol=1e-5)
    assert torch.allclose(ours[1], projector.grad, rtol=1e-4, atol=1e-7)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_two_process_ddp_on_cpu_tracks_the_single_process_run(toy, tmp_path):
    import os
    import subprocess
    import sys

    from mmgraph.cli import main

    args = [
        "train",
        "pt",
        "--config",
        str(toy["config"]),
        "--data",
        str(toy["pt"]),
        "--steps",
        "8",
        "--batch-size",
        "8",
        "--cache",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def two_processes(out: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(_free_port()),
                "-m",
                "mmgraph.cli",
                *args,
                "--out",
                str(tmp_path / out),
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = two_processes("two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("pt: 8 steps") == 1  # only the main process reports
    # micro-batches under DDP: gradients are all-reduced once a step (no_sync before the last pass), same steps
    micro = two_processes("two-micro", "--micro-batches", "2")
    assert micro.returncode == 0, micro.stderr[-3000:]

    one = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == list(range(1, 9))
    assert json.loads((tmp_path / "two" / "train.json").read_text())["processes"] == 2
    # The same global batches: per-process means averaged by DDP track the single process closely.
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05), (a, b)
    assert two[-1]["loss"] < 0.7 * two[0]["loss"]
    two_micro = [json.loads(line) for line in (tmp_path / "two-micro" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in two_micro] == pytest.approx([r["loss"] for r in two], rel=1e-4)


@pytest.mark.integration
def test_cli_train_writes_a_run_refuses_to_clobber_it_and_reports_bad_rows(toy, tmp_path, capsys):
    from mmgraph.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "pt",
        "--config",
        str(toy["config"]),
        "--data",
        str(toy["pt"]),
        "--out",
        str(out),
        "--steps",
        "4",
        "--cache",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert main(args) == 0
    for name in (
        "trainable.safetensors",
        "system.yaml",
        "train.json",
        "log.jsonl",
        "loss.png",
        "checkpoint/optimizer.safetensors",
    ):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "log.jsonl").read_text().splitlines()) == 4

    assert main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 4  # a fresh log, not appended

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"image": str(toy["pt"].parent / "images" / "0000-red.png"), "caption": "a red square"})
        + "\n"
        + json.dumps({"image": "missing.png", "caption": "a red square"})
        + "\n"
        + json.dumps({"conversations": [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "x"}]})
        + "\n"
    )
    assert (
        main(
            [
                "train",
                "it",
                "--config",
                str(toy["config"]),
                "--data",
                str(bad),
                "--out",
                str(tmp_path / "b"),
                "--no-progress",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}:2: image file not found" in err and f"{bad}:3: turn 1: unknown placeholder <video>" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("diffusion_weight, light", [(0.0, True), (1.0, False)])
def test_a_trainer_loads_the_generators_denoisers_only_for_the_diffusion_loss(toy, tmp_path, diffusion_weight, light):
    """The alignment loss reads the generators' text encoders alone, so their UNets and VAEs stay on disk."""
    from training import Trainer
    from training.toy import toy_system_config

    data = write_colour_squares(tmp_path / "d", 4)
    run = Trainer(
        toy_system_config(toy["lm"]),
        data["pt"],
        None,
        train={"progress": False, "cache_dir": str(tmp_path / "cache"), "diffusion_weight": diffusion_weight},
    )
    run.prepare()
    tool = run.system.generator("image")
    assert tool.conditioning_only is light and (tool.pipeline.unet is None) is light
    assert run.evaluate()["align/image"] > 0


@pytest.mark.integration
def test_latent_diffusion_loss_trains_the_output_projector_through_the_frozen_unet(toy, tmp_path):
    from core.errors import ConfigError

    data = write_colour_squares(tmp_path / "d", 16)
    see, draw = split_rows(data["pt"], tmp_path / "d")
    system = make_system(toy)
    unet = {k: v.clone() for k, v in system.generator("image").pipeline.unet.state_dict().items()}
    projector = {k: v.clone() for k, v in system.output_projectors["image"].state_dict().items()}
    settings = dict(diffusion_weight=1.0, batch_size=8)

    before = trainer(system, draw, None, tmp_path / "cache", **settings).evaluate()["diffusion/image"]
    run = trainer(
        system,
        draw,
        tmp_path / "run",
        tmp_path / "cache",
        lm_weight=0.0,
        align_weight=0.0,
        lr=1e-3,
        max_steps=60,
        **settings,
    ).run()
    after = trainer(system, draw, None, tmp_path / "cache", **settings).evaluate()["diffusion/image"]

    assert all("diffusion/image" in h for h in run.history)
    assert after < before  # the same noise and timesteps, scored before and after
    assert any(not torch.equal(projector[k], v) for k, v in system.output_projectors["image"].state_dict().items())
    assert all(torch.equal(unet[k], v) for k, v in system.generator("image").pipeline.unet.state_dict().items())
    assert list((tmp_path / "cache").glob("stable_diffusion-*-latents-*/*.safetensors"))

    with pytest.raises(ConfigError, match="needs output targets"):
        trainer(system, see, None, tmp_path / "cache", **settings).evaluate()


@pytest.mark.integration
def test_compiled_objective_gives_the_plain_losses_and_gradients(toy, tmp_path):
    """``TrainConfig(compile=True)``: the frozen LLM runs through torch.compile inside the objective. LM and
    alignment losses and every projector gradient match the eager objective's; the compiled wrapper is not a
    submodule (the objective's state dict is unchanged)."""
    from training.batches import collate
    from training.objective import ProjectorObjective

    run = trainer(make_system(toy), toy["it"], None, tmp_path / "cache", batch_size=4)
    run.prepare()
    system = run.system
    batch = collate(run.encoded[:4], 0, run.features, run.targets)
    assert batch.outputs  # the alignment path (hidden states at signal tokens) is exercised too
    params = [p for p in system.parameters() if p.requires_grad]

    def losses_and_grads(objective):
        system.zero_grad(set_to_none=True)
        total, parts = objective(batch)
        total.backward()
        return parts, [p.grad.clone() if p.grad is not None else None for p in params]

    plain = ProjectorObjective(system)
    compiled = ProjectorObjective(system, compile_llm=True)
    (want, want_grads), (got, got_grads) = losses_and_grads(plain), losses_and_grads(compiled)
    assert compiled.llm() is not system.backbone.model and plain.llm() is system.backbone.model
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    assert want.keys() == got.keys() and len(want) >= 2
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name
    assert sum(g is not None for g in want_grads) > 0
    for a, b in zip(got_grads, want_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_train_cli_passes_compile_and_grouping_to_the_train_config(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import training
    from mmgraph.cli import main

    seen = []
    monkeypatch.setattr(training, "train", lambda *a, **kw: seen.append(kw) or SimpleNamespace(main_process=False))
    base = ["train", "pt", "--data", "d.json", "--out", str(tmp_path / "o")]
    assert main([*base, "--compile", "--group-by-length", "--micro-batches", "3"]) == 0 and main(base) == 0
    given, unset = seen[0]["train"], seen[1]["train"]
    assert given.compile is True and given.group_by_length is True and given.micro_batches == 3
    assert unset.model_fields_set == {"stage"}  # nothing else typed: TrainConfig's defaults


@pytest.mark.gpu
def test_compiled_training_on_cuda_tracks_the_eager_run(toy, tmp_path):
    """``--compile`` on a GPU with the Trainer's GPU defaults (bf16 autocast, gradient checkpointing on): the
    same IT steps give the eager run's losses within bf16 noise, and the loss falls."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from orchestrator.system import MMSystem

    histories = {}
    for compiled in (False, True):
        system = MMSystem.from_config(toy_system_config(toy["lm"]), device="cuda")
        run = trainer(
            system,
            toy["it"],
            tmp_path / f"out-{compiled}",
            tmp_path / "cache",
            batch_size=8,
            max_steps=12,
            device="cuda",
            compile=compiled,
            lr=1e-3,
        )
        histories[compiled] = [h["loss"] for h in run.run().history]
    eager, compiled = histories[False], histories[True]
    assert len(eager) == len(compiled) == 12
    assert compiled == pytest.approx(eager, rel=5e-2)
    assert sum(compiled[-3:]) < sum(compiled[:3])


def test_length_grouped_order_is_a_seeded_permutation_of_tight_batches():
    from training.batches import length_grouped_order

    rng = random.Random(0)
    lengths = [rng.randint(10, 200) for _ in range(1003)]
    order = length_grouped_order(lengths, 8, torch.Generator().manual_seed(1), megabatch=10)
    assert sorted(order) == list(range(1003))
    assert order == length_grouped_order(lengths, 8, torch.Generator().manual_seed(1), megabatch=10)
    assert order != length_grouped_order(lengths, 8, torch.Generator().manual_seed(2), megabatch=10)

    def fill(order):  # real tokens / padded tokens over the full batches
        batches = [order[i : i + 8] for i in range(0, len(order) - 7, 8)]
        return sum(sum(lengths[i] for i in b) for b in batches) / sum(8 * max(lengths[i] for i in b) for b in batches)

    shuffled = torch.randperm(1003, generator=torch.Generator().manual_seed(1)).tolist()
    assert fill(shuffled) < 0.65 and fill(order) > 0.9
    # the batches are not simply sorted end to end: neighbouring batches come from different mega-batches
    firsts = [lengths[order[i]] for i in range(0, 1000, 8)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_group_by_length_pads_less_and_still_trains(toy, tmp_path, monkeypatch):
    from training import trainer as trainer_module

    padded: list[tuple[int, int]] = []  # (real tokens, padded tokens) per batch
    collate = trainer_module.collate

    def recording(items, *args, **kwargs):
        padded.append((sum(len(e.input_ids) for e in items), len(items) * max(len(e.input_ids) for e in items)))
        return collate(items, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "collate", recording)
    results = {}
    for grouped in (False, True):
        padded.clear()
        system = make_system(toy)
        run = trainer(
            system,
            toy["it"],
            tmp_path / str(grouped),
            tmp_path / "cache",
            stage="it",
            max_steps=12,
            batch_size=8,
            lr=3e-3,
            group_by_length=grouped,
            seed=3,
        ).run()
        results[grouped] = (sum(r for r, _ in padded) / sum(p for _, p in padded), run.losses())
    assert results[True][0] > results[False][0] + 0.05, results
    assert results[True][0] > 0.9
    losses = results[True][1]
    # grouped batches alternate between short and long conversations, whose losses differ several-fold, so compare
    # halves of the run rather than a few steps at each end
    half = len(losses) // 2
    assert sum(losses[half:]) < 0.85 * sum(losses[:half]), losses


def test_text_lm_group_by_length_feeds_shorter_batches_and_learns(tmp_path, monkeypatch):
    from training import lm as lm_module
    from training.toy import text_dialogues, toy_system_config

    widths: list[int] = []
    from transformers import LlamaForCausalLM

    forward = LlamaForCausalLM.forward

    def recording(self, *args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", recording)
    dialogues = text_dialogues(seed=0)
    runs = {}
    for grouped in (False, True):
        widths.clear()
        losses: list[float] = []
        lm_module.train_text_lm(
            toy_system_config("@tiny/llama").llm,
            dialogues,
            tmp_path / str(grouped),
            steps=30,
            batch_size=8,
            lr=1e-2,
            progress=False,
            losses=losses,
            group_by_length=grouped,
        )
        runs[grouped] = (sum(widths), losses)
    assert runs[True][0] < runs[False][0]
    assert sum(runs[True][1][-5:]) < 0.5 * sum(runs[True][1][:5])


def test_length_chunks_and_step_shares():
    from training.batches import IGNORE, Encoded, Share, length_chunks

    lengths = [9, 3, 7, 1, 5, 8, 2]
    chunks = length_chunks(list(range(7)), 3, length=lambda i: lengths[i])
    assert [len(c) for c in chunks] == [2, 3, 2]
    assert [lengths[i] for c in chunks for i in c] == sorted(lengths)  # every item once, shortest first
    assert len(length_chunks(list(range(3)), 5, length=lambda i: i)) == 3  # never an empty micro-batch

    a = Encoded("a", [1, 2, 3, 4], [IGNORE, IGNORE, 3, 4], outputs=[("image", "h", 2)], targets=[None])
    b = Encoded("b", [1, 2, 3], [1, 2, IGNORE], outputs=[("image", "h", 0), ("audio", "g", 1)], targets=["t", "u"])
    share = Share.of([a, b], latents={"image": object()})
    # labels[1:] are the predicted tokens: a has 3, 4; b has 2
    assert share.tokens == 3 and share.outputs == {"image": 2, "audio": 1} and share.latents == {"image": 1}


def test_micro_batches_take_the_whole_batch_step_with_less_padding(toy, tmp_path, monkeypatch):
    from training import trainer as trainer_module

    widths: list[tuple[int, int]] = []  # (rows, padded length) of every collated batch
    collate = trainer_module.collate

    def recording(items, *args, **kwargs):
        widths.append((len(items), max(len(e.input_ids) for e in items)))
        return collate(items, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "collate", recording)
    runs = {}
    for parts in (1, 3):
        widths.clear()
        system = make_system(toy)
        result = trainer(
            system,
            toy["it"],
            tmp_path / str(parts),
            tmp_path / "cache",
            stage="it",
            max_steps=4,
            batch_size=8,
            lr=3e-3,
            seed=5,
            micro_batches=parts,
        ).run()
        runs[parts] = (sum(r * w for r, w in widths), result.history)
    (padded_1, history_1), (padded_3, history_3) = runs[1], runs[3]
    assert padded_3 < padded_1  # fewer padded tokens for the same samples
    for one, three in zip(history_1, history_3, strict=True):  # the same losses, every part of them
        for key in ("loss", "lm_loss", "align_loss"):
            assert three[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (key, one, three)
    # (weights are not compared: Adam turns the rounding noise of gradients that are exactly zero in exact
    # arithmetic, such as attention key biases', into full-size steps; the gradients are compared below)


def test_micro_batch_shares_add_up_to_the_whole_batch_loss_and_gradients(toy, tmp_path):
    from training.batches import Share, collate, length_chunks
    from training.objective import ProjectorObjective

    run = trainer(make_system(toy), toy["it"], None, tmp_path / "cache", batch_size=8)
    run.prepare()
    system, items = run.system, run.encoded[:8]
    objective = ProjectorObjective(system)
    trainable = [p for p in system.parameters() if p.requires_grad]

    def backward(batches, share=None):
        system.zero_grad(set_to_none=True)
        total, parts = 0.0, {}
        for batch in batches:
            loss, part = objective(batch, share)
            loss.backward()
            total += loss.item()
            for k, v in part.items():
                parts[k] = parts.get(k, 0.0) + v.item()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in trainable]
        return total, parts, grads

    whole = backward([collate(items, 0, run.features, run.targets)])
    chunks = length_chunks(items, 3)
    assert len(chunks) == 3 and sum(len(c) for c in chunks) == 8
    split = backward([collate(c, 0, run.features, run.targets) for c in chunks], Share.of(items))
    assert split[0] == pytest.approx(whole[0], rel=1e-5)
    assert split[1].keys() == whole[1].keys() and any(k.startswith("align/") for k in whole[1])
    for key in whole[1]:
        assert split[1][key] == pytest.approx(whole[1][key], rel=1e-5), key
    assert sum(g.abs().sum() for g in whole[2]) > 0
    for a, b in zip(whole[2], split[2]):
        # summed in another order: an element that cancels to near zero keeps the rounding of its terms, so the
        # absolute tolerance scales with the tensor's largest gradient
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max()) + 1e-12)


def test_text_lm_micro_batches_take_the_same_steps_on_shorter_rows(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from training import lm as lm_module
    from training.toy import text_dialogues, toy_system_config

    cells: list[int] = []  # padded tokens per forward
    forward = LlamaForCausalLM.forward

    def recording(self, *args, **kwargs):
        cells.append(kwargs["input_ids"].numel())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", recording)
    dialogues = text_dialogues(seed=0)
    runs = {}
    for parts in (1, 4):
        cells.clear()
        losses: list[float] = []
        out = lm_module.train_text_lm(
            toy_system_config("@tiny/llama").llm,
            dialogues,
            tmp_path / str(parts),
            steps=5,
            batch_size=8,
            lr=1e-2,
            progress=False,
            losses=losses,
            micro_batches=parts,
        )
        runs[parts] = (sum(cells), len(cells), losses, AutoModelForCausalLM.from_pretrained(out).state_dict())
    assert runs[4][1] == 4 * runs[1][1]  # four forwards a step
    assert runs[4][0] < runs[1][0]
    assert runs[4][2] == pytest.approx(runs[1][2], rel=1e-4)
    for key, value in runs[1][3].items():
        assert torch.allclose(runs[4][3][key], value, rtol=1e-3, atol=1e-5), key
