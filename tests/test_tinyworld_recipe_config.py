"""How a recipe run is configured: ``mmgraph train world --field-name VALUE`` for every RecipeConfig field, and the
device every step trains on."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from core.errors import ConfigError
from core.options import flag
from mmgraph.cli import main
from tinyworld.config import STEP_TABLE, RecipeConfig
from tinyworld.recipe import add_arguments, config_from_args
from tinyworld.runner import run
from tinyworld.steps import STEPS, Context


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--out", "unused", *argv])


def test_every_field_is_a_flag_with_its_description_as_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "world", "--help"])
    assert exit_.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps the help: compare without any whitespace
    for name, info in RecipeConfig.model_fields.items():
        assert flag(name) in text, name
        assert info.description, f"RecipeConfig.{name} has no description"
        assert "".join(info.description.rstrip(".").split()) in text, name
    assert "--set" not in text
    assert all(name in text for name in STEP_TABLE)  # --only's choices


def test_a_flag_reaches_the_recipe_config():
    config = config_from_args(_args("--video-steps", "7"))
    assert config.video_steps == 7
    assert config.model_dump() == RecipeConfig(video_steps=7).model_dump()  # everything else: the defaults


def test_flags_set_fields_of_every_type():
    config = config_from_args(
        _args(
            "--video-steps",
            "1200",
            "--it-follow-ups",
            "0.35",
            "--group-by-length",
            "true",
            "--pt-mix",
            '{"image/describe": 2}',
            "--micro-batches",
            '{"pt": 2}',
            "--preset",
            "tiny-world",
            "--no-lora",
            "--seed",
            "3",
            "--threads",
            "2",
            "--device",
            "auto",
        )
    )
    assert config.video_steps == 1200 and config.it_follow_ups == 0.35 and config.group_by_length is True
    assert config.pt_mix == {"image/describe": 2} and config.micro_batches == {"pt": 2}
    assert config.preset == "tiny-world" and config.lora is False and config.seed == 3
    assert config.threads == 2 and config.device == "auto"
    untouched = RecipeConfig()
    assert config.encoder_steps == untouched.encoder_steps and config.lm_steps == untouched.lm_steps


def test_flags_apply_on_top_of_the_small_recipe():
    config = config_from_args(_args("--small", "--video-steps", "7"))
    assert config.video_steps == 7
    assert config.lm_steps == RecipeConfig.small().lm_steps != RecipeConfig().lm_steps
    assert config_from_args(_args("--small")).model_dump() == RecipeConfig.small().model_dump()


@pytest.mark.parametrize(
    "argv, option",
    [
        (("--video-steps", "-1"), "--video-steps"),
        (("--video-batch", "0"), "--video-batch"),
        (("--it-follow-ups", "1.5"), "--it-follow-ups"),
        (("--group-by-length", "sometimes"), "--group-by-length"),
    ],
)
def test_an_invalid_value_is_a_config_error_naming_its_flag_before_anything_runs(tmp_path, capsys, argv, option):
    with pytest.raises(ConfigError, match=f"^{option}: "):
        config_from_args(_args(*argv))
    with pytest.raises(ConfigError, match=f"^{option}: "):
        config_from_args(_args("--small", *argv))
    out = tmp_path / "run"
    assert main(["train", "world", "--out", str(out), *argv]) == 2
    assert f"mmgraph: error: {option}: " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--vidoe-steps", "3"), "unrecognized arguments: --vidoe-steps"),
        (("--video-steps", "many"), "argument --video-steps: invalid int value: 'many'"),
        (("--set", "video_steps=3"), "unrecognized arguments: --set"),
    ],
)
def test_an_unknown_flag_or_an_unreadable_number_is_an_argument_error(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "world", "--out", str(out), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_run_device_resolves_auto_to_cuda_only_when_there_is_one(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Context(tmp_path, RecipeConfig(device="auto"), progress=False).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Context(tmp_path, RecipeConfig(device="auto"), progress=False).device == "cuda"
    assert Context(tmp_path, RecipeConfig(), progress=False).device == "cpu"


@pytest.mark.gpu
def test_the_small_recipe_trains_every_step_on_cuda(tmp_path, monkeypatch):
    """Every step on the GPU (the LLM, the towers, VAEs, UNets, judges, PT and IT); the folder it writes loads on
    the CPU as a complete system that answers and draws."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from orchestrator.assistant import Assistant

    out = tmp_path / "world"
    record = run(out, RecipeConfig.small(device="cuda"), progress=False, log=lambda _: None, jobs=2)
    assert set(record["steps"]) == set(STEPS) and record["config"]["device"] == "cuda"
    monkeypatch.setenv("MMGRAPH_TINYWORLD", str(out / "weights"))
    bot = Assistant.from_config("tiny-world", db=tmp_path / "t.sqlite", artifacts=tmp_path / "a", device="cpu")
    forced = bot.chat("Draw a red circle.", generate=["image"], max_new_tokens=12)
    assert [a.modality for a in forced.artifacts] == ["image"]


def test_the_scheduler_starts_the_longest_chains_first():
    """The LLM, the encoders and the data head the chain to PT and IT; the VAEs only feed the generators, which
    nothing waits for (the slow tier's recipe run checks that they start in that order)."""
    from tinyworld.runner import chain_lengths

    chain = chain_lengths()
    assert chain["it"] == 1 and chain["pt"] == 2 and chain["judges"] == 1
    assert chain["language"] == chain["encoders"] == chain["data"] == 3 > chain["vae"] == 2
    assert all(chain[f"{kind}-generator"] == 1 for kind in ("image", "video", "audio"))
    assert set(STEPS["pt"].after) == {"language", "encoders", "data"}  # not the generators' UNets
    for name, spec in STEPS.items():  # a step is always further from the end than the steps that read it
        assert all(chain[before] > chain[name] for before in spec.after)


def _seen_by_batched_steps(tmp_path, monkeypatch, config, field: str) -> dict:
    """``field`` as the LLM step and the PT / IT stages receive it from ``config`` (nothing trains)."""
    import types

    from tinyworld import steps

    seen = {}
    monkeypatch.setattr(steps, "train_language_model", lambda out, **kw: seen.update(language=kw[field]) or {})
    monkeypatch.setattr(steps, "_move", lambda src, dst: None)

    class Trainer:
        def __init__(self, system, data, out, *, train, **kw):
            seen[train.stage] = getattr(train, field)

        def run(self):
            return types.SimpleNamespace(history=[{"lm_loss": 1.0}], steps=1)

    monkeypatch.setattr(steps, "Trainer", Trainer)
    ctx = Context(tmp_path, config, progress=False)
    monkeypatch.setattr(steps, "_text_side_system", lambda ctx: None)
    monkeypatch.setattr(Context, "system_config", lambda self: types.SimpleNamespace(save=lambda path: None))
    STEPS["language"].fn(ctx)
    steps._stage(ctx, "pt")
    steps._stage(ctx, "it")
    return seen


@pytest.mark.parametrize(
    "value, language, pt, it",
    [
        ("true", True, True, True),
        ("false", False, False, False),
        ('["language"]', True, False, False),
        ('["pt", "it"]', False, True, True),
    ],
)
def test_group_by_length_reaches_the_steps_it_names(tmp_path, monkeypatch, value, language, pt, it):
    config = config_from_args(_args("--group-by-length", value))
    seen = _seen_by_batched_steps(tmp_path, monkeypatch, config, "group_by_length")
    assert seen == {"language": language, "pt": pt, "it": it}


@pytest.mark.parametrize("args, language, pt, it", [((), 4, 1, 2), (("--micro-batches", '{"it": 3}'), 1, 1, 3)])
def test_micro_batches_reach_the_steps_they_name(tmp_path, monkeypatch, args, language, pt, it):
    seen = _seen_by_batched_steps(tmp_path, monkeypatch, config_from_args(_args(*args)), "micro_batches")
    assert seen == {"language": language, "pt": pt, "it": it}


@pytest.mark.parametrize("value", ['{"vae": 2}', '{"it": 0}'])
def test_micro_batches_name_only_batched_steps_and_positive_counts(value):
    with pytest.raises(ConfigError, match="^--micro-batches: "):
        config_from_args(_args("--micro-batches", value))


def test_group_by_length_names_only_batched_steps():
    with pytest.raises(ConfigError, match="^--group-by-length: "):
        config_from_args(_args("--group-by-length", '["vae"]'))


def test_each_run_records_its_own_settings(tmp_path, monkeypatch):
    """``--only`` reruns some steps with other settings: the record keeps what every run used."""
    from tinyworld import runner, steps

    def write(name):
        def fn(ctx):
            (ctx.out / f"{name}.txt").write_text(str(ctx.config.video_steps))
            return {"video_steps": ctx.config.video_steps}

        return steps.Step(f"{name}.txt", fn)

    monkeypatch.setattr(runner, "STEPS", {"first": write("first"), "second": write("second")})
    run(tmp_path, RecipeConfig(video_steps=5), progress=False, log=lambda _: None)
    (tmp_path / "second.txt").unlink()
    record = run(tmp_path, RecipeConfig(video_steps=9), only=["second"], progress=False, log=lambda _: None)
    assert [r["steps"] for r in record["runs"]] == [["first", "second"], ["second"]]
    assert [r["config"]["video_steps"] for r in record["runs"]] == [5, 9] and record["config"]["video_steps"] == 9
    assert {k: v["metrics"]["video_steps"] for k, v in record["steps"].items()} == {"first": 5, "second": 9}


def test_the_default_recipe_is_the_one_that_trained_the_shipped_weights():
    from core.hub import PACKAGED_WORLD_WEIGHTS

    shipped = json.loads((PACKAGED_WORLD_WEIGHTS / "recipe.json").read_text())["config"]
    machine = {"threads", "device"}  # how the run used its machine, not what it trained
    assert RecipeConfig().model_dump(exclude=machine) == RecipeConfig.model_validate(shipped).model_dump(
        exclude=machine
    )
    assert RecipeConfig().free_phrasing > 0 and RecipeConfig().glossary > 0 and RecipeConfig().augment > 0
    small = RecipeConfig.small()  # the tests' shrunken runs keep the canonical data
    assert (small.free_phrasing, small.honest_answers, small.glossary, small.augment) == (0.0, 0.0, 0.0, 0.0)


def test_free_phrasing_honest_answers_and_augment_reach_their_steps(tmp_path, monkeypatch):
    from tinyworld import steps

    seen = {}
    monkeypatch.setattr(steps, "_move", lambda src, dst: None)
    monkeypatch.setattr(steps.shutil, "copytree", lambda *a, **k: None)
    monkeypatch.setattr(
        steps,
        "train_language_model",
        lambda out, **kw: (
            seen.update(
                language=(
                    kw["free_phrasing"],
                    kw["honest_answers"],
                    kw["glossary"],
                    kw["reading"],
                    kw["shapes"],
                    kw["novel"],
                )
            )
            or {}
        ),
    )
    monkeypatch.setattr(
        steps,
        "write_datasets",
        lambda folder, **kw: (
            seen.update(data=(kw["free_phrasing"], kw["honest_answers"], kw["augment"], kw["shapes"], kw["novel"]))
            or {}
        ),
    )
    losses = {"loss/initial": 1.0, "loss/image": 0.0, "loss/audio": 0.0, "loss/clip": 0.0}
    monkeypatch.setattr(steps, "train_encoders", lambda out, **kw: seen.update(encoders=kw["augment"]) or losses)
    shapes = {"single": 0.6, "ambiguous": 0.15, "pair": 0.25}
    config = config_from_args(
        _args(
            *("--free-phrasing", "0.7", "--honest-answers", "0.1", "--augment", "0.5", "--glossary", "0.12"),
            *("--reading", "0.2", "--generate-shapes", json.dumps(shapes), "--novel-words", "0.3"),
        )
    )
    ctx = Context(tmp_path, config, progress=False)
    for name in ("language", "data", "encoders"):
        STEPS[name].fn(ctx)
    assert seen == {
        "language": (0.7, 0.1, 0.12, 0.2, shapes, 0.3),
        "data": (0.7, 0.1, 0.5, shapes, 0.3),
        "encoders": 0.5,
    }
    with pytest.raises(ConfigError, match="^--generate-shapes: "):
        config_from_args(_args("--generate-shapes", '{"triple": 1}'))
    with pytest.raises(ConfigError, match="^--augment: "):
        config_from_args(_args("--augment", "1.5"))
