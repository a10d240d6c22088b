"""How long the tinyworld recipe will take on this machine, before it runs: ``mmgraph train world --plan``.

    mmgraph train world --plan --out runs/plan --jobs 2 --threads 2 --video-steps 900

A plan runs every step of the recipe once with each training loop cut to ``probe_steps`` steps, at the full data
sizes and batches. So each step's fixed work (rendering, caching features, encoding latents, evaluating, saving)
is measured as it is, and each loop's seconds per step are measured on one thread and on all cores
(:func:`training.meter.probing`). A step's predicted time is its fixed work plus, for each loop, the
configured steps times its seconds per step (:func:`predict_step`). The recipe's own scheduler
(:func:`tinyworld.runner.schedule`) then lays the steps out over the run's jobs and cores (:func:`simulate`): the
end of the last step is the planned wall clock.

What a plan does not see: the fixed work runs on one thread (a run may give it more); two steps side by side are
assumed not to slow each other down; a loop's cost that only shows after many steps (a periodic evaluation) is
missed. docs/tinyworld.md compares plans with the runs that followed them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tinyworld.config import STEP_TABLE, RecipeConfig
from tinyworld.judges import STEPS as JUDGE_STEPS
from tinyworld.runner import run, schedule
from training import meter

#: each metered training loop of the recipe -> the RecipeConfig field that sets its number of steps
LOOP_STEPS: dict[str, str] = {
    "text LM": "lm_steps",
    "encoders": "encoder_steps",
    "vae (3 ch)": "vae_steps",
    "vae (1 ch)": "vae_steps",
    "image unet": "image_steps",
    "video frames": "video_pretrain_steps",
    "video unet": "video_steps",
    "audio unet": "audio_steps",
    "mm pt": "pt_steps",
    "mm it": "it_steps",
    "picture judge": "judge_steps",
    "clip judge": "judge_steps",
    "sound judge": "judge_steps",
}
HOUR = 3600.0  #: the recipe's budget on a 2-core CPU (the tinyworld issue)


def configured_steps(config: RecipeConfig, loop: str) -> int | None:
    """The steps ``config`` gives the loop named ``loop``; ``None`` for a loop the plan does not know."""
    field = LOOP_STEPS.get(loop)
    if field is None:
        return None
    value = getattr(config, field)
    if value is None and field == "judge_steps":
        value = JUDGE_STEPS
    return int(value)


def probe_config(config: RecipeConfig, probe_steps: int) -> RecipeConfig:
    """``config`` with every loop cut to ``probe_steps`` steps (a loop set to 0 stays off), on one thread."""
    if probe_steps < 2:
        raise ValueError(f"probe_steps must be at least 2, got {probe_steps}")
    cut = {
        field: min(probe_steps, getattr(config, field)) if getattr(config, field) is not None else probe_steps
        for field in set(LOOP_STEPS.values())
    }
    return config.model_copy(update={**cut, "threads": 1})


def per_step(loop: dict, threads: int) -> float:
    """A loop record's seconds per step on ``threads`` threads: measured there, else at the nearest count below
    (the conservative side), else the lowest measured, else its mean over all steps."""
    table = {int(k): float(v) for k, v in (loop.get("per_step") or {}).items()}
    if not table:
        return loop["seconds"] / max(loop["steps"], 1)
    below = [t for t in table if t <= threads]
    return table[max(below)] if below else table[min(table)]


def predict_step(step: dict, config: RecipeConfig, threads: int) -> float:
    """Seconds one recipe step would take with ``config`` on ``threads`` threads, from a record of it (``{"seconds",
    "loops"}`` as :func:`tinyworld.runner.run` writes it): the work outside its loops as measured, plus each known
    loop's configured steps times its seconds per step (an unknown loop counts as measured)."""
    loops = step.get("loops") or []
    total = max(step["seconds"] - sum(loop["seconds"] for loop in loops), 0.0)
    for loop in loops:
        steps = configured_steps(config, loop["name"])
        total += loop["seconds"] if steps is None else steps * per_step(loop, threads)
    return total


def simulate(
    seconds: Callable[[str, int], float], todo: Sequence[str], *, jobs: int, cores: int
) -> dict[str, tuple[float, float]]:
    """Start and end of each step of ``todo`` as a run with ``jobs`` and ``cores`` would lay them out, given
    ``seconds(step, threads)``. One job: the steps one after another on every core. More: the recipe's scheduler
    decides which step starts when and with how many threads; a step whose threads change goes on at its new
    rate."""
    if jobs <= 1:
        now, timeline = 0.0, {}
        for name in todo:
            timeline[name] = (now, now + seconds(name, cores))
            now = timeline[name][1]
        return timeline
    waiting, granted = list(todo), {}  # granted: running step -> threads
    done: dict[str, float] = {}  # running step -> share of its work done
    started: dict[str, float] = {}
    timeline: dict[str, tuple[float, float]] = {}
    now = 0.0
    while waiting or granted:
        starts, raised = schedule(waiting, granted, jobs, cores)
        for name, threads in starts:
            waiting.remove(name)
            granted[name], done[name], started[name] = threads, 0.0, now
        granted.update(raised)
        if not granted:
            raise ValueError(f"steps {waiting} wait on steps that never run")
        rates = {name: 1.0 / max(seconds(name, threads), 1e-9) for name, threads in granted.items()}
        dt = min((1.0 - done[name]) / rates[name] for name in granted)  # until the next step ends
        now += dt
        for name in list(granted):
            done[name] += rates[name] * dt
            if done[name] >= 1.0 - 1e-9:
                del granted[name]
                timeline[name] = (started[name], now)
    return timeline


def critical_chain(timeline: dict[str, tuple[float, float]], tolerance: float = 1e-6) -> list[str]:
    """The steps that set the wall clock: the step that ends last, the step whose end let it start (a step it
    reads, else the one that freed its slot), and so on back to the start of the run."""
    chain = [max(timeline, key=lambda n: timeline[n][1])]
    while timeline[chain[0]][0] > tolerance:
        start = timeline[chain[0]][0]
        ended = [n for n, (_, end) in timeline.items() if abs(end - start) <= tolerance * max(1.0, start)]
        if not ended:
            break
        reads = [n for n in ended if n in STEP_TABLE[chain[0]].after]
        chain.insert(0, (reads or ended)[0])
    return chain


def plan(
    out: str | Path,
    config: RecipeConfig | None = None,
    *,
    jobs: int = 1,
    probe_steps: int = 16,
    progress: bool = True,
    keep_probe: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Probe every step of the recipe in ``out/probe`` and predict how long ``config`` takes with ``jobs`` and its
    threads (default: every core). Writes and returns ``out/plan.json``: ``{"config", "jobs", "cores",
    "probe_steps", "probe_seconds", "steps": {step: {"one_thread", "all_cores", "start", "end", "loops"}},
    "wall_seconds", "chain", "fits_hour"}``, and draws the planned timeline into ``out/plan.png``. ``keep_probe``:
    keep the probe's folder (a recipe run with short loops, whose outputs let a single full step be timed with
    ``--only``)."""
    config = config or RecipeConfig()
    out = Path(out)
    cores = config.threads or os.cpu_count() or 1
    folder = out / "probe"
    log(f"probing every recipe step with {probe_steps}-step loops on 1 and {cores} threads (in {folder}) ...")
    began = time.perf_counter()
    with meter.probing(sorted({1, cores})):
        record = run(folder, probe_config(config, probe_steps), overwrite=True, progress=progress, log=log, jobs=1)
    probe_seconds = time.perf_counter() - began
    todo = list(STEP_TABLE)

    def seconds(name: str, threads: int) -> float:
        return predict_step(record["steps"][name], config, threads)

    timeline = simulate(seconds, todo, jobs=jobs, cores=cores)
    wall = max(end for _, end in timeline.values())
    steps = {}
    for name in todo:
        loops = [
            {"name": loop["name"], "steps": configured_steps(config, loop["name"]), "per_step": loop["per_step"]}
            for loop in record["steps"][name].get("loops", [])
        ]
        steps[name] = {
            "one_thread": round(seconds(name, 1), 1),
            "all_cores": round(seconds(name, cores), 1),
            "start": round(timeline[name][0], 1),
            "end": round(timeline[name][1], 1),
            "loops": loops,
        }
    result = {
        "config": config.model_dump(),
        "jobs": jobs,
        "cores": cores,
        "probe_steps": probe_steps,
        "probe_seconds": round(probe_seconds, 1),
        "steps": steps,
        "wall_seconds": round(wall, 1),
        "chain": critical_chain(timeline),
        "fits_hour": wall <= HOUR,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(result, indent=2))
    plot_plan(result, out / "plan.png")
    if not keep_probe:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def plot_plan(result: dict, png: str | Path) -> Path:
    """Draw the planned timeline: one bar per step from its planned start to end, the steps the end waits on
    (:func:`critical_chain`) in red, and the hour marked."""
    import matplotlib  # noqa: PLC0415 - heavy plotting library, used only to draw the plan

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use("Agg"), so no display is needed

    steps = sorted(result["steps"].items(), key=lambda kv: kv[1]["start"], reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(steps) + 1.2), dpi=100)
    for row, (name, step) in enumerate(steps):
        on_chain = name in result["chain"]
        ax.barh(
            row,
            (step["end"] - step["start"]) / 60,
            left=step["start"] / 60,
            color="tab:red" if on_chain else "tab:blue",
            alpha=0.85 if on_chain else 0.6,
        )
    ax.set_yticks(range(len(steps)), [name for name, _ in steps])
    ax.axvline(HOUR / 60, color="black", linestyle="--", linewidth=1)
    ax.text(HOUR / 60, len(steps) - 0.4, " the hour", va="top", fontsize=8)
    ax.set_xlabel("minutes into the run")
    ax.set_title(
        f"planned: {result['wall_seconds'] / 60:.0f} min with {result['jobs']} job(s) on {result['cores']} "
        f"thread(s) (in red: the steps the end waits on)",
        fontsize=10,
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return Path(png)


def format_plan(result: dict) -> str:
    """The plan as a table: each step's predicted seconds alone and where the schedule puts it, then the total."""
    cores = result["cores"]
    lines = [f"| step | alone, 1 thread | alone, {cores} threads | planned start - end |", "|---|---|---|---|"]
    for name, step in sorted(result["steps"].items(), key=lambda kv: kv[1]["start"]):
        lines.append(
            f"| {name} | {step['one_thread']:.0f} s | {step['all_cores']:.0f} s | "
            f"{step['start']:.0f} - {step['end']:.0f} s |"
        )
    wall = result["wall_seconds"]
    lines.append("")
    lines.append(
        f"planned: {wall:.0f} s ({wall / 60:.0f} min) on the clock with {result['jobs']} job(s) on {cores} "
        f"thread(s); {'within' if result['fits_hour'] else 'over'} the hour. Waited on: "
        + " -> ".join(result["chain"])
        + f". (The probe took {result['probe_seconds']:.0f} s.)"
    )
    return "\n".join(lines)
