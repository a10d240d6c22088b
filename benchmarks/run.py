"""``mmgraph bench`` / ``python -m benchmarks.run``: run the side-by-side benchmarks and print their tables.

mmgraph bench                                   # everything at the tiny size, on the CPU
mmgraph bench train decode --size llava-7b --device cuda --dtype bfloat16 --batch 16
mmgraph bench graph                             # orchestration overhead of a tiny-world turn
mmgraph bench generate --size sd15 --device cuda --dtype float16 --compile
mmgraph bench grouping --steps 40               # length-grouped vs random batches, the tinyworld recipe's steps
mmgraph bench micro --steps 40                  # the same random batches in micro-batches of similar length
mmgraph bench optimizer --steps 20              # fused vs default AdamW, the tinyworld recipe's training steps
mmgraph bench peers                             # imported @tiny/llava, @tiny/mllama vs Hugging Face generate
mmgraph bench peers --peer /models/llava-1.5-7b-hf --device cuda --dtype bfloat16
mmgraph bench serve                             # mmgraph serve: 16 mixed turns, serial vs 1, 4, 8, 16 clients
mmgraph bench serve --requests 48 --clients 1,8
mmgraph bench load --seconds 300 --queue-size 2 # locust, twice the queue's capacity of users: 429s, errors, memory
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from benchmarks import BENCHES, DEFAULT_BENCHES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from benchmarks.common import Row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "benches", nargs="*", metavar="BENCH", help=f"{' | '.join(BENCHES)} (default: {', '.join(DEFAULT_BENCHES)})"
    )
    parser.add_argument(
        "--size",
        default="tiny",
        help="twin size: tiny | llava-layout | llava-7b for train / decode; tiny | sd15 for generate",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4, help="PT batch size")
    parser.add_argument(
        "--steps", type=int, default=5, help="timed PT steps (grouping, micro, optimizer: timed steps of each stage)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per decode run")
    parser.add_argument(
        "--encoder",
        default="live",
        choices=["live", "cached"],
        help="ours runs the frozen encoder every PT step (live) or reads cached features",
    )
    parser.add_argument(
        "--cache",
        default="auto",
        help="our decoding cache: auto | dynamic | static | graph (static, CUDA-graph steps) | "
        "compiled (those steps compiled by torch.compile first); auto: graph on CUDA, dynamic "
        "elsewhere. A comma-separated list (compiled,graph,compiled) measures each in turn on "
        "the same twins, the baseline again each time",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="train: run our frozen LLM through torch.compile; generate: GeneratorConfig(compile=True)",
    )
    parser.add_argument(
        "--compile-baseline",
        action="store_true",
        help="train: also compile the baseline's language model (LLaVA + torch.compile)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="decode, generate: timed runs per measure (median)")
    parser.add_argument("--diffusion-steps", type=int, default=30, help="generate: DDIM steps (guidance 7.5)")
    parser.add_argument(
        "--peer",
        action="append",
        default=None,
        help="peers: a checkpoint folder (or @tiny/<peer>) to import and race; repeat it (default @tiny/llava and "
        "@tiny/mllama)",
    )
    parser.add_argument(
        "--requests", type=int, default=16, help="serve: turns per run (one mixed set, for serial and each --clients)"
    )
    parser.add_argument(
        "--clients",
        type=counts,
        default=(1, 4, 8, 16),
        help="serve: concurrent client counts to race against the serial run, comma-separated (default 1,4,8,16)",
    )
    parser.add_argument("--seconds", type=float, default=300, help="load: how long locust loads the server")
    parser.add_argument(
        "--queue-size", type=int, default=2, help="load: the server's --queue-size (capacity: turns at once + this)"
    )
    parser.add_argument("--users", type=int, default=None, help="load: locust users (default: twice the capacity)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="serve, load: an option for the mmgraph serve they start, e.g. --server-arg=--device=cuda (repeat it)",
    )
    parser.add_argument(
        "--json", default=None, help="also write the rows to this JSON file ({rows, load} when load runs)"
    )


def counts(text: str) -> tuple[int, ...]:
    """``"1,4,8,16"`` -> ``(1, 4, 8, 16)``: positive whole numbers, for ``--clients``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, got {text!r}")
    return values


def run_from_args(args: argparse.Namespace) -> list[Row]:
    """Run the benchmarks ``args`` name, print their table, and return the rows (:mod:`benchmarks.suite`)."""
    from benchmarks import suite  # noqa: PLC0415 - torch, transformers, diffusers: the CLI's parser stays light

    return suite.run_from_args(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
