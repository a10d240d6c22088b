"""The tinyworld recipe: every component of the ``tiny-world`` system trained from scratch, in order.

This module is its command line, ``mmgraph train world`` (or ``python -m tinyworld.recipe``):

    mmgraph train world --out runs/world            # or: python -m tinyworld.recipe --out runs/world
    MMGRAPH_TINYWORLD=runs/world/weights mmgraph demo   # use the freshly trained system
    mmgraph train world --plan --out runs/plan --jobs 2  # how long a run would take here (tinyworld.plan)
    mmgraph train world --out runs/world --video-steps 1200 --micro-batches '{"it": 3}'   # any RecipeConfig field

Steps (each a real Hugging Face / diffusers class at tiny size, seeded from one seed):

1. ``language``  -- SentencePiece tokenizer + ``LlamaForCausalLM`` on the world's text (:mod:`tinyworld.language`)
2. ``encoders``  -- CLIP-style image/text pair and a Whisper-encoder audio tower bound to the same text tower,
   contrastively (:mod:`tinyworld.encoders`)
3. ``vae``       -- ``AutoencoderKL`` for pictures / frames and one for mel spectrograms
   (:mod:`tinyworld.diffusion_training`)
4. ``image-generator``, ``video-generator``, ``audio-generator`` -- UNets conditioned on the frozen text tower:
   a ``StableDiffusionPipeline``, a ``TextToVideoSDPipeline`` and a mel-spectrogram ``StableDiffusionPipeline``
5. ``data``      -- MM PT / MM IT data sets rendered from the world (:mod:`tinyworld.data`)
6. ``pt``, ``it`` -- MM PT then MM IT of the projectors (and signal rows, LoRA in IT) with
   :mod:`training`, encoders / LLM / generators frozen
7. ``judges``    -- the independent classifiers ``mmgraph eval`` judges generated media with, trained separately
   from everything above (:mod:`tinyworld.judges`)

Everything lands in ``OUT/weights`` in the layout of the packaged ``tinyworld/weights`` (``@tinyworld/<name>``),
intermediate products in ``OUT/work``; ``OUT/recipe.json`` records each step's seconds and metrics. A step whose
output exists is skipped, so an interrupted run resumes where it stopped (``--overwrite`` starts over).

The pieces: the settings and the step table in :mod:`tinyworld.config`, the step bodies in :mod:`tinyworld.steps`,
running and scheduling them in :mod:`tinyworld.runner`, planning a run in :mod:`tinyworld.plan`, shipping its
weights in :mod:`tinyworld.ship`. This module stays cheap to import (``mmgraph`` builds its parser from
:func:`add_arguments` on every call): what trains is loaded only once a run or a plan starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import ConfigError
from core.options import add_options, build, options_from_args
from tinyworld.config import SMALL, STEP_TABLE, RecipeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's options (``--out``, ``--jobs``, ``--small``, ``--only``, ...) and one ``--field-name`` option per
    :class:`~tinyworld.config.RecipeConfig` field, its description as help (:func:`core.options.add_options`)."""
    parser.add_argument("--out", required=True, help="run folder (weights land in OUT/weights)")
    parser.add_argument("--jobs", type=int, default=1, help="steps run side by side in worker processes")
    parser.add_argument(
        "--small",
        action="store_true",
        help="start from the shrunken test recipe (RecipeConfig.small: minutes, not an hour); the settings given "
        "apply on top",
    )
    parser.add_argument("--only", nargs="+", choices=list(STEP_TABLE), help="run only these steps")
    parser.add_argument("--overwrite", action="store_true", help="delete OUT and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="afterwards copy OUT/weights into the package (tinyworld/weights): the new default system",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="train nothing for real: probe every step with short loops and predict how long this "
        "run would take here (OUT/plan.json; minutes, see tinyworld.plan)",
    )
    parser.add_argument("--probe-steps", type=int, default=16, help="steps of each loop in a --plan probe")
    parser.add_argument("--keep-probe", action="store_true", help="keep the --plan probe's run folder (OUT/probe)")
    settings = parser.add_argument_group(
        "recipe settings", "every RecipeConfig field (tinyworld.config); the defaults are the shipped system's"
    )
    add_options(settings, RecipeConfig)


def config_from_args(args: argparse.Namespace) -> RecipeConfig:
    """The run's :class:`~tinyworld.config.RecipeConfig`: the shipped defaults (or, with ``--small``,
    :meth:`~tinyworld.config.RecipeConfig.small`), with every setting given on top. An invalid value raises
    :class:`~core.errors.ConfigError` naming its option, before anything runs."""
    options = options_from_args(args, RecipeConfig)
    return build(RecipeConfig, {**SMALL, **options} if args.small else options)


def run_from_args(args: argparse.Namespace) -> dict:
    """Run (or, with ``--plan``, plan) the recipe as the command line asks; returns the run's or the plan's record."""
    config = config_from_args(args)
    if args.plan:
        if args.only or args.ship:
            raise ConfigError("--plan probes the whole recipe and trains nothing to keep: drop --only / --ship")
        from tinyworld.plan import format_plan, plan  # noqa: PLC0415 - heavy (torch, diffusers): only a plan needs it

        result = plan(
            args.out,
            config,
            jobs=args.jobs,
            probe_steps=args.probe_steps,
            progress=not args.no_progress,
            keep_probe=args.keep_probe,
        )
        print(format_plan(result))
        return result
    from tinyworld.runner import run  # noqa: PLC0415 - heavy (torch, diffusers): only a run needs it

    record = run(
        args.out, config, only=args.only, overwrite=args.overwrite, progress=not args.no_progress, jobs=args.jobs
    )
    wall = record["runs"][-1]["wall_seconds"] if record.get("runs") else 0.0
    print(
        f"recipe finished: {wall:.0f} s on the clock, {record.get('total_seconds', 0):.0f} s of steps; "
        f"weights in {Path(args.out) / 'weights'}"
    )
    if args.ship:
        from tinyworld.ship import PACKAGED_WEIGHTS, ship  # noqa: PLC0415 - heavy (torch): only --ship needs it

        shipped = ship(Path(args.out) / "weights")
        print(f"shipped {shipped['files']} files, {shipped['bytes'] / 1e6:.1f} MB, into {PACKAGED_WEIGHTS}")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.recipe", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
