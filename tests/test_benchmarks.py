"""The side-by-side benchmarks at the tiny size: both sides compute the same thing (not timings).

The twins share their modules, so equal losses, logits and greedy tokens mean the benchmark times the same
workload on both paths.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.decode import bench_decode, same_tokens
from benchmarks.train import bench_train, losses
from benchmarks.twins import build_twins, make_batch


@pytest.fixture(scope="module")
def twins():
    return build_twins("tiny", seed=0)


def test_twins_share_modules_and_only_the_projector_trains(twins):
    assert twins.ours.encoder("image").model is twins.hf.model.vision_tower
    assert twins.ours.backbone.model.model is twins.hf.model.language_model
    assert twins.ours.input_projectors["image"].net[0] is twins.hf.model.multi_modal_projector.linear_1
    trainable = {n for n, p in twins.hf.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.multi_modal_projector.") for n in trainable)
    ours = {n for n, p in twins.ours.named_parameters() if p.requires_grad}
    assert ours and all(n.startswith("input_projectors.image.") for n in ours)


def test_pt_loss_and_logits_agree(twins):
    batch = make_batch(twins, 3, seed=1)
    assert batch.hf_ids.shape == (3, 1 + twins.num_image_tokens + 16)
    assert (batch.labels != -100).sum() == 3 * 16
    result = losses(twins, batch)
    assert result["hf_loss"] == pytest.approx(result["our_loss"], rel=1e-5)
    assert result["max_logit_diff"] < 1e-4


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_tokens_agree_with_hf_generate(twins, cache):
    tokens = same_tokens(twins, tokens=12, cache=cache)
    assert tokens["ours"] == tokens["hf"] and len(tokens["ours"]) == 12


def test_benchmarks_produce_rows(twins):
    train = bench_train("tiny", batch_size=2, steps=1, warmup=1, twins=twins)
    cached = bench_train("tiny", batch_size=2, steps=1, warmup=0, twins=twins, encoder="cached")
    decode = bench_decode("tiny", tokens=4, repeats=1, twins=twins)
    rows = train + cached + decode
    assert [r.unit for r in rows] == ["samples/s", "samples/s", "tokens/s", "ms"]  # no CUDA: no memory rows
    assert all(r.ours > 0 and r.baseline > 0 and r.ratio > 0 for r in rows)
    assert rows[0].notes["weights"] == "random" and rows[0].notes["device"] == "cpu"


def test_training_steps_move_the_shared_projector(twins):
    before = twins.hf.model.multi_modal_projector.linear_1.weight.detach().clone()
    bench_train("tiny", batch_size=2, steps=1, warmup=0, twins=twins)
    assert not torch.equal(before, twins.ours.input_projectors["image"].net[0].weight)


def test_graph_overhead_is_measured(world_assistant):
    from benchmarks.graph import bench_graph

    (row,) = bench_graph(repeats=1, assistant=world_assistant)
    assert 0 < row.baseline < row.ours  # model calls are part of the turn
    assert row.notes["overhead_ms"] == pytest.approx(row.ours - row.baseline)


def test_compile_flags_reach_both_sides_and_the_baseline_is_restored(twins, monkeypatch):
    """``--compile`` compiles our LLM inside the objective, ``--compile-baseline`` puts a compiled wrapper in
    LLaVA's ``language_model`` slot while the baseline is timed, and the shared module is back afterwards.
    (torch.compile is replaced by a recorder here: the compiled numerics are covered in test_training.)"""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    language_model = twins.hf.model.language_model
    (row,) = bench_train("tiny", batch_size=2, steps=1, warmup=0, twins=twins, compile=True, compile_baseline=True)
    assert language_model in compiled and twins.ours.backbone.model in compiled
    assert twins.hf.model.language_model is language_model
    assert row.notes["compile"] and row.notes["compile_baseline"] and "baseline compiled" in row.measure


def test_bench_cli_refuses_an_unknown_cache_before_building_anything(monkeypatch):
    import benchmarks.suite
    from mmgraph.cli import main

    monkeypatch.setattr(benchmarks.suite, "build_twins", lambda *a, **k: pytest.fail("built twins"))
    with pytest.raises(SystemExit, match="unknown decoding cache 'paged'"):
        main(["bench", "decode", "--cache", "graph,paged"])


@pytest.fixture(scope="module")
def sd_twins():
    from benchmarks.diffusion import build_sd_twins

    return build_sd_twins("tiny", steps=3)


def test_image_generator_node_gives_the_raw_pipelines_pixels(sd_twins):
    """Ours (the generator node: checks, cached negatives, PNG) and the raw diffusers call on the same modules and
    seed: the same image, pixel for pixel; a different seed gives a different one."""
    import io

    import numpy as np
    from PIL import Image

    from benchmarks.diffusion import baseline_image, max_pixel_diff, our_image

    assert max_pixel_diff(sd_twins) == 0
    image = np.asarray(Image.open(io.BytesIO(our_image(sd_twins).data)).convert("RGB"))
    assert image.shape == (32, 32, 3) and image.std() > 1
    assert not np.array_equal(np.asarray(baseline_image(sd_twins, seed=1)), image)


def test_generate_benchmark_rows_and_the_compile_switch(sd_twins, monkeypatch):
    """The row of the timed comparison; ``GeneratorConfig(compile=True)`` compiles our pipeline's UNet only (the
    baseline shares the module but keeps calling it uncompiled). Nothing is run compiled here, compiling being too
    slow for the default tier (the GPU run checks the compiled pixels, docs/benchmarks.md)."""
    from benchmarks.diffusion import bench_generate, build_sd_twins

    (row,) = bench_generate("tiny", repeats=1, twins=sd_twins)
    assert row.unit == "ms/image" and row.ours > 0 and row.baseline > 0 and row.notes["max_pixel_diff"] == 0
    compiled = []
    real = torch.compile  # wraps without tracing; nothing here calls the wrapper
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append((module, kw)) or real(module))
    twins = build_sd_twins("tiny", steps=1, compile=True)
    assert [m for m, _ in compiled] == [twins.baseline.unet] and compiled[0][1] == {"mode": None}  # CPU: no graphs
    assert twins.ours.pipeline.unet is not twins.baseline.unet  # the wrapper sits in our pipeline alone
    assert twins.ours.pipeline.unet._orig_mod is twins.baseline.unet
    with pytest.raises(SystemExit, match="unknown size 'llava-7b'; sizes: tiny, sd15"):
        from mmgraph.cli import main

        main(["bench", "generate", "--size", "llava-7b"])


def test_every_bench_command_in_the_docs_parses():
    """docs/benchmarks.md quotes the commands behind its tables; each must still be a valid ``mmgraph bench``
    invocation (benchmarks, sizes and cache kinds known), so the tables stay reproducible."""
    import shlex
    from pathlib import Path

    from benchmarks.diffusion import SD_SIZES
    from benchmarks.twins import SIZES
    from mmgraph.cli import build_parser
    from orchestrator.decoding import resolve

    text = (Path(__file__).parents[1] / "docs" / "benchmarks.md").read_text()
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("mmgraph bench")]
    assert len(commands) >= 10
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        for cache in args.cache.split(","):
            resolve(cache, torch.device("cpu"))
        assert args.size in (SD_SIZES if args.benches == ["generate"] else SIZES), command


def test_grouping_bench_measures_the_same_training_with_less_padding():
    """The grouping bench's text-LM row: both sides train the packaged tinyworld LLM on the same dialogues; the
    grouped batches are far fuller (the speed itself is not asserted: CI machines are noisy)."""
    from benchmarks.grouping import bench_text_lm

    row = bench_text_lm(steps=2, dialogues=200, warmup=1)
    assert row.unit == "samples/s" and row.ours > 0 and row.baseline > 0
    assert row.notes["fill_baseline"] < 0.65 and row.notes["fill_ours"] > 0.8


def test_micro_bench_runs_the_baseline_batches_in_fuller_micro_batches(monkeypatch):
    """The micro bench's text-LM row: ours is the same training with 4 micro-batches a step, which fill their rows
    far better than the baseline's one pass."""
    from benchmarks import grouping
    from benchmarks.grouping import OURS, bench_text_lm

    seen = []
    real = grouping.train_text_lm
    monkeypatch.setattr(
        grouping, "train_text_lm", lambda *a, **kw: seen.append(kw.get("micro_batches", 1)) or real(*a, **kw)
    )
    row = bench_text_lm(steps=2, dialogues=200, warmup=1, ours=OURS["micro"]["language"])
    assert seen == [1, 4] and "4 micro-batches" in row.measure
    assert row.notes["fill_baseline"] < 0.65 and row.notes["fill_ours"] > 0.8


def test_optimizer_bench_compares_the_default_loop_with_the_fused_kernel(monkeypatch):
    """The optimizer bench's update rows: the baseline side builds torch's per-tensor AdamW, ours the fused one, on
    the same parameters (the speed itself is not asserted: CI machines are noisy)."""
    import torch

    from benchmarks import optimizer as bench

    built = []
    real = torch.optim.AdamW

    def recording(params, **kwargs):
        optimiser = real(params, **kwargs)
        built.append(bool(optimiser.defaults["fused"]))
        return optimiser

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    rows = bench.bench_update_alone(repeats=1)
    assert [r.measure.split(",")[1].split("(")[0].strip() for r in rows] == [
        "image UNet",
        "video UNet",
        "RGB VAE",
        "tinyworld LLM",
    ]
    assert built == [False, True] * 4
    assert all(r.unit == "ms" and r.ours > 0 and r.baseline > 0 and not r.higher_is_better for r in rows)


def test_peers_benchmark_races_both_sides_on_the_same_tokens():
    from benchmarks.peers import bench_peers

    rows = bench_peers(("@tiny/llava", "@tiny/mllama"), tokens=6, repeats=1)
    assert [r.unit for r in rows] == ["tokens/s", "ms", "tokens/s", "ms"]
    assert all(r.notes["same_tokens"] for r in rows)  # greedy tokens equal before anything is timed
    assert all(r.ours > 0 and r.baseline > 0 for r in rows)
