"""Run the benchmarks an ``mmgraph bench`` command line names and print their table (:func:`run_from_args`).

The options themselves are declared in :mod:`benchmarks.run`, which stays light; this module imports every
benchmark, and with them torch, transformers and diffusers.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from benchmarks import BENCHES, DEFAULT_BENCHES
from benchmarks.common import Row, table
from benchmarks.decode import bench_decode
from benchmarks.diffusion import SD_SIZES, bench_generate, build_sd_twins
from benchmarks.graph import bench_graph
from benchmarks.grouping import bench_grouping
from benchmarks.load import run_load
from benchmarks.optimizer import bench_optimizer
from benchmarks.peers import DEFAULT_PEERS, bench_peers
from benchmarks.serve import bench_serve, serve_table
from benchmarks.train import bench_train
from benchmarks.twins import SIZES, build_twins
from orchestrator.decoding import resolve


def describe_device(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_from_args(args: argparse.Namespace) -> list[Row]:
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
    rows: list[Row] = []
    twins = None
    sized = ("train", "decode", "generate")  # the others run the tiny-world system or an imported peer
    for bench in args.benches:
        sizes = SD_SIZES if bench == "generate" else SIZES
        if bench in sized and args.size not in sizes:
            raise SystemExit(f"mmgraph bench {bench}: unknown size {args.size!r}; sizes: {', '.join(sizes)}")
    if {"train", "decode"} & set(args.benches):
        twins = build_twins(args.size, device=args.device, dtype=dtype)
    if "train" in args.benches:
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
        for cache in args.cache.split(","):
            rows += bench_decode(
                args.size, tokens=args.tokens, twins=twins, dtype=dtype, cache=cache, repeats=args.repeats
            )
    if "generate" in args.benches:
        sd = build_sd_twins(
            args.size, device=args.device, dtype=dtype, steps=args.diffusion_steps, compile=args.compile
        )
        rows += bench_generate(args.size, repeats=args.repeats, twins=sd, dtype=dtype)
    for mode in ("grouping", "micro"):
        if mode in args.benches:
            rows += bench_grouping(steps=args.steps, mode=mode)
    if "optimizer" in args.benches:
        rows += bench_optimizer(steps=args.steps)
    if "graph" in args.benches:
        rows += bench_graph()
    if "peers" in args.benches:
        peers = tuple(args.peer) if args.peer else DEFAULT_PEERS
        rows += bench_peers(peers, tokens=args.tokens, repeats=args.repeats, device=args.device, dtype=dtype)
    if "serve" in args.benches:
        rows += bench_serve(requests=args.requests, clients=args.clients, server_args=args.server_arg)
    load = None
    if "load" in args.benches:
        load = run_load(seconds=args.seconds, queue_size=args.queue_size, users=args.users, server_args=args.server_arg)
    if rows:
        print(table(rows, f"mmgraph bench on {describe_device(args.device)} (random weights for the twins)"))
    for row in rows:
        extra = {
            k: v
            for k, v in row.notes.items()
            if k
            in ("overhead_ms", "overhead_pct", "prompt", "max_pixel_diff", "fill_ours", "fill_baseline", "same_tokens")
        }
        if extra:
            print(
                f"  {row.measure}: "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
            )
    if "serve" in args.benches:
        print("\n" + serve_table(rows))
    if load is not None:
        print("\n" + load.table())
    if args.json:
        out: object = [r.to_dict() for r in rows]
        if load is not None:
            out = {"rows": out, "load": load.to_dict()}
        Path(args.json).write_text(json.dumps(out, indent=2))
    return rows
