"""The tinyworld recipe end to end at a shrunken size, and a small eval of the shipped tiny-world system.

The shrunken recipe runs every step for a few dozen updates; the test reads the record it writes and checks that
each stage learned something (its loss fell, or its accuracy beats chance), and that the weights folder it
produces loads as a complete system that answers and generates.
"""

from __future__ import annotations

import json

import pytest
import torch

from tinyworld.config import RecipeConfig
from tinyworld.runner import run
from tinyworld.steps import STEPS

# Several minutes on two cores (every step of the recipe runs): in the slow tier until it is shrunk further.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    record = run(out, RecipeConfig.small(threads=2), progress=False, log=lambda _: None, jobs=2)
    return out, record


def test_the_shrunken_recipe_runs_every_step_and_records_it(small_run):
    out, record = small_run
    assert set(record["steps"]) == set(STEPS)
    assert record["runs"][-1]["jobs"] == 2 and set(record["runs"][-1]["steps"]) == set(STEPS)
    assert record["runs"][-1]["config"] == record["config"] == RecipeConfig.small(threads=2).model_dump()
    # two workers: the steps overlap, so the clock shows less than the steps' summed times
    assert record["runs"][-1]["wall_seconds"] < record["total_seconds"]


def test_each_step_starts_after_the_steps_it_reads(small_run):
    out, record = small_run
    timeline = record["runs"][-1]["timeline"]
    for name, spec in STEPS.items():
        start, end = timeline[name]
        assert start <= end
        for before in spec.after:
            assert timeline[before][1] <= start, (before, name)
    # two slots: the heads of the longest chains (the LLM and the encoders -> PT -> IT) go first
    assert timeline["language"][0] < 1 and timeline["encoders"][0] < 1
    assert timeline["vae"][0] >= min(timeline["language"][1], timeline["encoders"][1])
    assert json.loads((out / "recipe.json").read_text())["steps"].keys() == record["steps"].keys()
    for name in (
        "llm",
        "image-encoder",
        "audio-encoder",
        "image-generator",
        "video-generator",
        "audio-generator",
        "projectors",
        "judges",
    ):
        assert (out / "weights" / name).is_dir(), name


def test_pt_and_it_aligned_to_the_finished_generators_own_text_features(small_run):
    """PT and IT ran beside the UNets, on each generator's text side alone: its features must be the finished
    generator's, bit for bit, and the projectors' saved system names the finished generators."""
    from core.config import load_config
    from generators import build_generator

    out, _ = small_run
    saved = load_config(out / "weights" / "projectors" / "system.yaml")
    captions = ["a small red circle at the top left", "two short beeps of a high tone", ""]
    for name, gcfg in saved.generators.items():
        assert gcfg.model == str((out / "weights" / f"{name}-generator").resolve())
        full = build_generator(gcfg)
        text_side = build_generator(
            gcfg.model_copy(update={"model": str(out / "work" / "conditioning" / name)}), conditioning_only=True
        )
        assert not full.conditioning_only and text_side.conditioning_only
        ours, theirs = text_side.encode_text(captions), full.encode_text(captions)
        assert all(torch.equal(ours[key], theirs[key]) for key in theirs), name


def test_every_stage_learns(small_run):
    _, record = small_run
    m = {name: step["metrics"] for name, step in record["steps"].items()}
    assert m["language"]["loss_last"] < 0.6 * m["language"]["loss_first"]
    assert m["encoders"]["loss_last"] < 0.8 * m["encoders"]["loss_first"]
    for kind in ("rgb", "mel"):
        assert m["vae"][kind]["loss_last"] < 0.8 * m["vae"][kind]["loss_first"], kind
    for kind in ("image", "audio"):
        metrics = m[f"{kind}-generator"]
        assert metrics["loss_last"] < 0.8 * metrics["loss_first"], kind
    # the video UNet grows from its 2D twin trained on single frames; a few 3D steps are too noisy to compare
    video = m["video-generator"]["pretrain"]
    assert video["loss_last"] < 0.5 * video["loss_first"]
    for stage in ("pt", "it"):
        assert m[stage]["lm_loss_last"] < 0.8 * m[stage]["lm_loss_first"], stage
    for key in [k for k in m["pt"] if k.startswith("align/") and k.endswith("_last")]:  # PT aligns the outputs
        assert m["pt"][key] < 0.9 * m["pt"][key.replace("_last", "_first")], key
    judges = m["judges"]
    assert judges["picture"]["colour"] > 1 / 6 + 0.2 and judges["sound"]["pitch"] > 1 / 3 + 0.2


def test_the_run_is_resumable_without_redoing_finished_steps(small_run):
    out, record = small_run
    logs = []
    again = run(out, RecipeConfig.small(threads=2), progress=False, log=logs.append)
    assert again["steps"] == record["steps"]
    assert all("skipped" in line for line in logs)


def test_the_trained_folder_is_a_complete_system(small_run, monkeypatch, tmp_path):
    from orchestrator.assistant import Assistant
    from tinyworld.world import Picture, encode

    out, _ = small_run
    monkeypatch.setenv("MMGRAPH_TINYWORLD", str(out / "weights"))
    bot = Assistant.from_config("tiny-world", db=tmp_path / "t.sqlite", artifacts=tmp_path / "a")
    picture = Picture(colour="red", shape="circle", position="centre", size="large")
    reply = bot.chat("What colour is the shape?", images=[encode(picture, 1)], max_new_tokens=8)
    assert isinstance(reply.text, str) and reply.thread_id
    forced = bot.chat("Draw a red circle.", generate=["image"], max_new_tokens=12)
    assert [a.modality for a in forced.artifacts] == ["image"]


def test_a_plan_probes_every_step_and_predicts_the_run_it_planned(small_run, tmp_path):
    from tinyworld.plan import LOOP_STEPS, plan

    _, record = small_run
    for name, step in record["steps"].items():  # every training loop of the run is metered under a known name
        assert all(loop["name"] in LOOP_STEPS for loop in step["loops"]), name
    assert {loop["name"] for step in record["steps"].values() for loop in step["loops"]} == set(LOOP_STEPS)
    result = plan(tmp_path, RecipeConfig.small(threads=2), jobs=2, probe_steps=4, progress=False, log=lambda _: None)
    assert set(result["steps"]) == set(STEPS)
    assert (tmp_path / "plan.json").is_file() and (tmp_path / "plan.png").is_file()
    assert not (tmp_path / "probe").exists()
    steps = result["steps"]  # the critical chain runs from the start of the run to the step that ends last
    assert steps[result["chain"][0]]["start"] == 0 and result["chain"][-1] == max(steps, key=lambda n: steps[n]["end"])
    actual = record["runs"][-1]["wall_seconds"]  # the same config, run for real with two jobs
    assert 0.4 * actual < result["wall_seconds"] < 2.5 * actual
