"""``mmgraph bench`` / ``python -m benchmarks.run``: run the side-by-side benchmarks and print their tables.

mmgraph bench                                   # everything at the tiny size, on the CPU
mmgraph bench train decode --size llava-7b --device cuda --dtype bfloat16 --batch 16
mmgraph bench graph                             # orchestration overhead of a tiny-world turn
mmgraph bench generate --size sd15 --device cuda --dtype float16 --compile
mmgraph bench grouping --steps 40               # length-grouped vs random batches, the tinyworld recipe's steps
mmgraph bench micro --steps 40                  # the same random batches in micro-batches of similar length
mmgraph bench optimizer --steps 20              # fused vs default AdamW, the tinyworld recipe's training steps
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

BENCHES = ("train", "decode", "graph", "generate", "grouping", "micro", "optimizer")
DEFAULT_BENCHES = ("train", "decode", "graph", "generate")  # grouping, micro, optimizer train tinyworld's models


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def run_from_args(args: argparse.Namespace) -> list:
    import torch

    from benchmarks.common import table
    from benchmarks.diffusion import SD_SIZES
    from benchmarks.twins import SIZES, build_twins
    from orchestrator.decoding import resolve

    for cache in args.cache.split(","):
        try:
            resolve(cache, torch.device("cpu"))  # an unknown kind fails here, before any model is built
        except ValueError as error:
            raise SystemExit(f"mmgraph bench: {error}") from None
    unknown = [b for b in args.benches if b not in BENCHES]
    if unknown:
        raise SystemExit(f"mmgraph bench: unknown benchmarks {unknown}; choose from {', '.join(BENCHES)}")
    args.benches = args.benches or list(DEFAULT_BENCHES)
    dtype = getattr(torch, args.dtype)
    rows = []
    twins = None
    for bench in args.benches:
        sizes = SD_SIZES if bench == "generate" else SIZES
        if bench not in ("graph", "grouping", "micro", "optimizer") and args.size not in sizes:
            raise SystemExit(f"mmgraph bench {bench}: unknown size {args.size!r}; sizes: {', '.join(sizes)}")
    if {"train", "decode"} & set(args.benches):
        twins = build_twins(args.size, device=args.device, dtype=dtype)
    if "train" in args.benches:
        from benchmarks.train import bench_train

        rows += bench_train(
            args.size,
            batch_size=args.batch,
            steps=args.steps,
            encoder=args.encoder,
            twins=twins,
            dtype=dtype,
            compile=args.compile,
            compile_baseline=args.compile_baseline,
        )
    if "decode" in args.benches:
        from benchmarks.decode import bench_decode

        for cache in args.cache.split(","):
            rows += bench_decode(
                args.size, tokens=args.tokens, twins=twins, dtype=dtype, cache=cache, repeats=args.repeats
            )
    if "generate" in args.benches:
        from benchmarks.diffusion import bench_generate, build_sd_twins

        sd = build_sd_twins(
            args.size, device=args.device, dtype=dtype, steps=args.diffusion_steps, compile=args.compile
        )
        rows += bench_generate(args.size, repeats=args.repeats, twins=sd, dtype=dtype)
    for mode in ("grouping", "micro"):
        if mode in args.benches:
            from benchmarks.grouping import bench_grouping

            rows += bench_grouping(steps=args.steps, mode=mode)
    if "optimizer" in args.benches:
        from benchmarks.optimizer import bench_optimizer

        rows += bench_optimizer(steps=args.steps)
    if "graph" in args.benches:
        from benchmarks.graph import bench_graph

        rows += bench_graph()
    print(table(rows, f"mmgraph bench on {describe_device(args.device)} (random weights for the twins)"))
    for row in rows:
        extra = {
            k: v
            for k, v in row.notes.items()
            if k in ("overhead_ms", "overhead_pct", "prompt", "max_pixel_diff", "fill_ours", "fill_baseline")
        }
        if extra:
            print(
                f"  {row.measure}: "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
            )
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
