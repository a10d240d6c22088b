"""Planning a recipe run: the loop meter, the scheduler's decisions, the simulated layout and the prediction."""

from __future__ import annotations

import time

import pytest
import torch

from tinyworld.config import STEP_TABLE, RecipeConfig
from tinyworld.plan import configured_steps, critical_chain, predict_step, probe_config, simulate
from tinyworld.runner import chain_lengths, schedule
from training import meter


def test_a_metered_loop_records_its_steps_and_seconds_per_step_on_each_probed_thread_count():
    meter.reset()
    before = torch.get_num_threads()
    seen = []
    with meter.probing((1, 2)):
        for _ in meter.metered(range(12), "sleepy"):
            seen.append(torch.get_num_threads())
            time.sleep(0.01)
    (record,) = meter.collected()
    assert seen == [1] * 6 + [2] * 6  # half the steps on each count
    assert torch.get_num_threads() == before  # the caller's count comes back
    assert record["name"] == "sleepy" and record["steps"] == 12
    assert record["seconds"] >= 0.12
    assert set(record["per_step"]) == {"1", "2"}
    for seconds in record["per_step"].values():  # the first two steps after each change are left out
        assert 0.009 <= seconds < 0.05


def test_a_loop_outside_a_probe_keeps_its_threads_and_a_loop_left_early_still_records():
    meter.reset()
    threads = torch.get_num_threads()
    for i in meter.metered(iter(range(100)), "no length"):  # no len(): never probed
        assert torch.get_num_threads() == threads
        if i == 5:
            break
    (record,) = meter.collected()
    assert record["steps"] == 6 and set(record["per_step"]) == {str(threads)}
    meter.reset()
    assert meter.collected() == []
    with pytest.raises(ValueError, match=">= 1"):
        with meter.probing((0, 2)):
            pass


def test_the_recipe_loops_are_known_to_the_plan_and_the_probe_cuts_every_one():
    config = RecipeConfig(video_steps=900, video_pretrain_steps=0)
    assert configured_steps(config, "video unet") == 900
    assert configured_steps(config, "picture judge") > 0  # None: the judges module's default
    assert configured_steps(config, "someone's loop") is None
    probe = probe_config(config, 8)
    assert probe.video_steps == 8 and probe.lm_steps == 8 and probe.judge_steps == 8 and probe.threads == 1
    assert probe.video_pretrain_steps == 0  # a loop that is off stays off
    assert probe.samples == config.samples and probe.pt_batch == config.pt_batch  # full data and batches
    with pytest.raises(ValueError):
        probe_config(config, 1)


def test_a_step_is_predicted_from_its_fixed_work_and_its_loops_seconds_per_step():
    step = {
        "seconds": 10.0,
        "loops": [
            {"name": "video frames", "steps": 16, "seconds": 3.0, "per_step": {"1": 0.2, "2": 0.1}},
            {"name": "video unet", "steps": 16, "seconds": 4.0, "per_step": {"1": 0.5, "2": 0.3}},
            {"name": "someone's loop", "steps": 3, "seconds": 1.0, "per_step": {"1": 0.3}},
        ],
    }
    config = RecipeConfig(video_pretrain_steps=1000, video_steps=900)
    fixed = 10.0 - 8.0
    assert predict_step(step, config, 2) == pytest.approx(fixed + 1000 * 0.1 + 900 * 0.3 + 1.0)
    assert predict_step(step, config, 1) == pytest.approx(fixed + 1000 * 0.2 + 900 * 0.5 + 1.0)
    assert predict_step(step, config, 4) == pytest.approx(predict_step(step, config, 2))  # nearest count below


def test_the_scheduler_starts_the_longest_chains_and_hands_idle_cores_to_running_steps():
    starts, raised = schedule(list(STEP_TABLE), {}, jobs=2, cores=2)
    assert starts == [("language", 1), ("encoders", 1)] and raised == {}
    # the VAEs done, the encoders still running: the generators wait, so a ready step takes the slot
    waiting = [n for n in STEP_TABLE if n not in ("encoders", "vae")]
    starts, raised = schedule(waiting, {"encoders": 1}, jobs=2, cores=2)
    assert len(starts) == 1 and not set(STEP_TABLE[starts[0][0]].after) & {"encoders"}
    # only IT left to wait on PT: PT gets both cores
    starts, raised = schedule(["it"], {"pt": 1}, jobs=2, cores=2)
    assert starts == [] and raised == {"pt": 2}


def test_one_job_runs_the_steps_one_after_another():
    timeline = simulate(lambda name, threads: 10.0, list(STEP_TABLE), jobs=1, cores=2)
    assert max(end for _, end in timeline.values()) == pytest.approx(10.0 * len(STEP_TABLE))


def test_with_a_job_per_step_the_wall_clock_is_the_longest_chain():
    timeline = simulate(lambda name, threads: 10.0, list(STEP_TABLE), jobs=len(STEP_TABLE), cores=len(STEP_TABLE))
    assert max(end for _, end in timeline.values()) == pytest.approx(10.0 * max(chain_lengths().values()))
    chain = critical_chain(timeline)
    assert chain[-1] == "it" and len(chain) == max(chain_lengths().values())


def test_two_jobs_respect_what_reads_what_and_use_both_slots():
    base = {name: 100.0 + 37 * i for i, name in enumerate(STEP_TABLE)}
    seconds = lambda name, threads: base[name] / (1.0 if threads == 1 else 1.6)  # noqa: E731
    timeline = simulate(seconds, list(STEP_TABLE), jobs=2, cores=2)
    assert set(timeline) == set(STEP_TABLE)
    for name, spec in STEP_TABLE.items():
        for before in spec.after:
            assert timeline[before][1] <= timeline[name][0] + 1e-9, (before, name)
    for name, (start, end) in timeline.items():  # each step runs between its one-thread and two-thread times
        assert base[name] / 1.6 - 1e-6 <= end - start <= base[name] + 1e-6, name
    wall = max(end for _, end in timeline.values())
    assert wall < sum(base.values()) / 1.6  # two slots beat one job on both cores here
    at_any_moment = [sum(s <= t < e for s, e in timeline.values()) for t in range(0, int(wall), 5)]
    assert max(at_any_moment) == 2


def test_the_recipe_training_loops_are_metered_under_the_names_the_plan_knows():
    from tinyworld.judges import train_judge
    from tinyworld.plan import LOOP_STEPS

    meter.reset()
    train_judge("sound", steps=4, batch_size=4, progress=False)
    (record,) = meter.collected()
    assert record["name"] == "sound judge" and record["name"] in LOOP_STEPS and record["steps"] == 4
