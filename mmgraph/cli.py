"""The ``mmgraph`` command line: ``run``, ``chat``, ``serve``, ``graph``, ``demo``, ``attach``, ``train``, ``eval``
and ``bench``.

mmgraph run "What is this? Then draw it." --image a.png --generate image --out out/
mmgraph chat                       # REPL: /image PATH, /audio PATH, /video PATH, /generate image, /new, /quit
mmgraph serve --port 8000          # OpenAI-compatible HTTP backend + web chat page at http://127.0.0.1:8000/
mmgraph serve --ray --replicas 2 --db postgresql://HOST/DB --artifacts /shared   # replicas under Ray Serve
mmgraph graph [--config CONFIG]    # the graph as mermaid
mmgraph graph --check tiny-world   # validate the wiring (networkx) and print the parallel stages
mmgraph demo --out out/demo        # a scripted any-to-any turn, printed as it streams, with an HTML report
mmgraph attach @tiny/llava --generators tiny-random --only image --out out/llava-gen   # a peer made any-to-any
mmgraph train pt --config system.yaml --data pairs.jsonl --out runs/pt      # train the projectors
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import BaseModel

import training  # its names load on first use: torch only when a run starts
from benchmarks.run import add_arguments as bench_arguments
from benchmarks.run import run_from_args as run_bench
from core.config import DEFAULT_PRESET, list_presets, load_config
from core.errors import ConfigError, MMGraphError
from core.options import add_options, build, options_from_args
from serving.settings import ReplicaSettings, ServerSettings
from tinyworld.recipe import add_arguments as world_arguments
from tinyworld.recipe import run_from_args as run_world
from training.config import TrainConfig
from training.report import quiet_libraries

#: TrainConfig fields whose flag is not the field's name
TRAIN_RENAMES = {"max_steps": "--steps", "cache_dir": "--cache"}
#: ServerSettings fields whose flag is not the field's name
SERVE_RENAMES = {"allowed_media_domains": "--allow-media-domain"}


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"preset name ({', '.join(list_presets())}), a system YAML, a system folder or a published "
        f"checkpoint folder (LLaVA, LLaVA-NeXT, BLIP-2, InstructBLIP, Llama 3.2 Vision); default {DEFAULT_PRESET}",
    )
    parser.add_argument("--weights", default=None, help="directory of trained projector weights")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the config's)")


def _state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help="thread database: a SQLite file, or a postgresql://USER@HOST/DATABASE URL that several processes share; "
        "default $MMGRAPH_HOME/threads.sqlite",
    )
    parser.add_argument(
        "--artifacts", default=None, help="artifact store folder (replicas share one); default $MMGRAPH_HOME/artifacts"
    )
    parser.add_argument(
        "--graph",
        default=None,
        metavar="MODULE:FUNCTION",
        help="run a custom graph: FUNCTION(config) returns a graphs.GraphBuilder, StateGraph or "
        "compiled graph (checked before the first turn)",
    )


def _assistant_kwargs(args: argparse.Namespace) -> dict:
    """What every command that runs turns passes to the Assistant (``--graph`` loads the user's factory)."""
    graph = None
    if args.graph:
        from graphs import load_graph  # noqa: PLC0415 - heavy (LangGraph, torch); only with --graph

        graph = load_graph(args.graph, load_config(args.config))
    return {"weights": args.weights, "device": args.device, "db": args.db, "artifacts": args.artifacts, "graph": graph}


def _gen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generate",
        action="append",
        default=[],
        metavar="NAME",
        help="a generator the reply must use (repeatable, or comma-separated): image, video, audio",
    )
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps of the generators")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")


def _params(args: argparse.Namespace) -> dict:
    names = {
        "max_new_tokens": "max_new_tokens",
        "temperature": "temperature",
        "seed": "seed",
        "steps": "steps",
        "guidance": "guidance",
    }
    return {key: getattr(args, attr) for key, attr in names.items() if getattr(args, attr, None) is not None}


def _split(values: Sequence[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _assistant(args: argparse.Namespace):
    from orchestrator.assistant import Assistant  # noqa: PLC0415 - heavy (torch); only commands that run turns

    return Assistant.from_config(args.config, **_assistant_kwargs(args))


def _print_events(events, out_dir: Path | None) -> object:
    """Print a streamed turn; copy artifacts to ``out_dir``; return the Reply."""
    reply = None
    for event in events:
        if event.type == "token":
            print(event.data["text"], end="", flush=True)
        elif event.type == "progress":
            d = event.data
            print(
                f"\r  [{d['generator']} {d['step']}/{d['total']}]",
                end="" if d["step"] < d["total"] else "\n",
                file=sys.stderr,
                flush=True,
            )
        elif event.type == "done":
            reply = event.reply
    print()
    for artifact in reply.artifacts:
        path = artifact.path
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{artifact.generator or artifact.modality}-{artifact.id[:12]}{artifact.path.suffix}"
            shutil.copyfile(artifact.path, path)
        print(f"[{artifact.modality}] {artifact.mime} {path}")
    return reply


# -- commands -------------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    bot = _assistant(args)
    events = bot.stream(
        args.text,
        images=args.image,
        audio=args.audio,
        video=args.video,
        thread_id=args.thread,
        generate=_split(args.generate),
        **_params(args),
    )
    reply = _print_events(events, Path(args.out) if args.out else None)
    print(f"thread: {reply.thread_id}", file=sys.stderr)
    return 0


CHAT_HELP = """commands: /image PATH  /audio PATH  /video PATH  (attach to the next message)
          /generate NAME[,NAME]  (require outputs for the next message)   /new  (new thread)
          /vocab  (what this system can be asked)   /quit"""


def cmd_chat(args: argparse.Namespace) -> int:
    bot = _assistant(args)
    thread = args.thread or uuid.uuid4().hex
    attached: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
    generate: list[str] = []
    print(f"mmgraph chat on {bot.config.name} (thread {thread})")
    vocabulary = bot.config.vocabulary
    if vocabulary:  # a newcomer reads the system's limits before the first message
        print("\n".join(vocabulary.lines()) + "\n")
    print(CHAT_HELP)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            cmd, *rest = shlex.split(line)
            if cmd in ("/quit", "/exit"):
                return 0
            if cmd == "/new":
                thread = uuid.uuid4().hex
                print(f"(new thread {thread})")
            elif cmd.lstrip("/") in attached and rest:
                attached[cmd.lstrip("/")].extend(rest)
                print(f"(attached {', '.join(rest)})")
            elif cmd == "/generate" and rest:
                generate = _split(rest)
            elif cmd == "/vocab":
                print("\n".join(vocabulary.lines()) if vocabulary else f"{bot.config.name} describes no vocabulary")
            else:
                print(CHAT_HELP)
            continue
        print("bot> ", end="", flush=True)
        try:
            _print_events(
                bot.stream(
                    line,
                    images=attached["image"],
                    audio=attached["audio"],
                    video=attached["video"],
                    thread_id=thread,
                    generate=generate,
                    **_params(args),
                ),
                Path(args.out) if args.out else None,
            )
        except MMGraphError as exc:
            print(f"\nerror: {exc}")
        attached = {k: [] for k in attached}
        generate = []


def cmd_graph(args: argparse.Namespace) -> int:
    """Print the graph as mermaid, or with ``--check`` validate it (exit 1, naming the nodes, if it is mis-wired)
    and print its parallel stages. ``--graph MODULE:FUNCTION`` builds a custom graph from the config."""
    from graphs import GraphBuilder, GraphError, check_graph, load_graph  # noqa: PLC0415 - heavy (LangGraph, torch)
    from orchestrator.system import resolve_config  # noqa: PLC0415 - a peer checkpoint's config reads transformers

    if args.check and args.config and args.check != args.config:
        raise ConfigError(f"--check {args.check} and --config {args.config} name different configs; give one")
    config = resolve_config(args.check or args.config)
    graph = load_graph(args.graph, config) if args.graph else GraphBuilder(config)
    if args.check is None:
        compiled = graph if hasattr(graph, "get_graph") else graph.compile()
        print(compiled.get_graph().draw_mermaid())
        return 0
    try:
        report = check_graph(graph, config)
    except GraphError as exc:
        where = f"{args.graph} on {config.name}" if args.graph else config.name
        print(f"mmgraph graph --check: FAILED: {where}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(report.format())
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    """``mmgraph attach SOURCE --generators PRESET --out DIR``: the source with generators added, saved."""
    from orchestrator.system import MMSystem, attach, resolve_config  # noqa: PLC0415 - loads the models (torch)
    from training.audit import format_audit, freeze_audit  # noqa: PLC0415 - as above

    donor = resolve_config(args.generators)
    names = args.only.split(",") if args.only else list(donor.generators)
    missing = [n for n in names if n not in donor.generators]
    if missing or not names:
        raise ConfigError(
            f"--generators {args.generators} has no generators {missing}; it has {list(donor.generators)}"
        )
    config = attach(args.source, {n: donor.generators[n] for n in names})
    # the generators' text side is enough to shape the output projectors; the denoisers load when they run
    system = MMSystem.from_config(config, device=args.device, conditioning_only=True)
    out = system.save_trainable(args.out)
    print(format_audit(freeze_audit(system)))
    print(f"mmgraph: wrote {out} ({config.name}); train the new parts with `mmgraph train pt --config {out} ...`")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mmgraph.demo import run_demo  # noqa: PLC0415 - the demo loads the models (torch): only for this command

    return run_demo(args)


def _settings(model: type[BaseModel], args: argparse.Namespace, renames: dict[str, str]) -> Any:
    """The ``model`` the command line asks for: an invalid value is a ConfigError naming the flag as typed."""
    return build(model, options_from_args(args, model), renames=renames)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(ServerSettings, args, SERVE_RENAMES)
    layout = options_from_args(args, ReplicaSettings)
    if args.ray:
        return _serve_on_ray(args, settings, _settings(ReplicaSettings, args, {}))
    if layout or args.ray_address:
        raise ConfigError("--replicas, --replica-cpus, --replica-gpus and --ray-address are options of --ray")
    from serving.app import create_app  # noqa: PLC0415 - the app loads the models (torch): only for this command
    from serving.replicas import ReplicaHeader  # noqa: PLC0415 - loads LangGraph and psycopg: only for this command

    app = create_app(config=args.config, settings=settings, **_assistant_kwargs(args))
    print(
        f"mmgraph: serving {app.app.state.server.model} on http://{args.host}:{args.port}/ "
        f"(OpenAI base URL http://{args.host}:{args.port}/v1)",
        flush=True,
    )
    uvicorn.run(ReplicaHeader(app), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _serve_on_ray(args: argparse.Namespace, settings: ServerSettings, layout: ReplicaSettings) -> int:
    """``mmgraph serve --ray``: the replicas under Ray Serve (serving.ray_app), until Ctrl-C or SIGTERM."""
    from serving.replicas import check_shared  # noqa: PLC0415 - loads LangGraph and psycopg: only for this command

    check_shared(args.db, layout.replicas)  # refused before ray is imported or a replica starts
    from serving.ray_app import RayServeArgs, serve_replicas  # noqa: PLC0415 - the optional ray extra, only here

    ray_args = RayServeArgs(
        **layout.model_dump(),
        config=args.config,
        weights=args.weights,
        device=args.device,
        db=args.db,
        artifacts=args.artifacts,
        graph=args.graph,
        settings=settings,
    )
    return serve_replicas(ray_args, host=args.host, port=args.port, address=args.ray_address, log_level=args.log_level)


def cmd_train(args: argparse.Namespace) -> int:
    settings = _settings(TrainConfig, args, TRAIN_RENAMES)  # the stage is the subcommand (args.stage)
    result = training.train(
        args.config, args.data, args.out, train=settings, init=args.init, resume=args.resume, overwrite=args.overwrite
    )
    if not result.main_process:
        return 0
    last = result.history[-1] if result.history else {}
    losses = ", ".join(
        f"{k} {v:.4f}" for k, v in last.items() if k.endswith("loss") or k.startswith(("align/", "diffusion/"))
    )
    print(
        f"{args.stage}: {result.steps} steps{' (stopped; --resume continues)' if not result.finished else ''}; "
        f"last step: {losses or 'n/a'}; outputs in {result.out}"
    )
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="preset name or system YAML")
    p.add_argument("--data", nargs="+", required=True, help="JSON / JSONL data file(s)")
    p.add_argument("--out", required=True, help="output folder (weights, log.jsonl, loss.png, checkpoint/)")
    p.add_argument("--init", default=None, help="start from this run's trainable weights (e.g. the PT run)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT holds a run")
    group = p.add_argument_group("training settings", "the fields of training.TrainConfig")
    add_options(group, TrainConfig, exclude={"stage"}, renames=TRAIN_RENAMES)


def cmd_train_world(args: argparse.Namespace) -> int:
    run_world(args)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tinyworld.evaluate import evaluate  # noqa: PLC0415 - heavy (torch, the judges); only for mmgraph eval

    result = evaluate(
        args.config,
        weights=args.weights,
        n=args.n,
        seed=args.seed,
        judges=args.judges,
        out=args.out,
        latency=not args.no_latency,
        device=args.device,
    )
    print(result.table())
    print(f"report: {Path(args.out) / 'report.html'}")
    failed = [r.name for r in result.rows.values() if r.passed is False]
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgraph", description="Any-to-any multimodal assistants on LangGraph.")
    parser.add_argument("-v", "--verbose", action="store_true", help="keep library logs and loading bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one turn and print the reply")
    p.add_argument("text")
    p.add_argument("--image", action="append", default=[], help="an input image (repeatable)")
    p.add_argument("--audio", action="append", default=[], help="an input audio clip (repeatable)")
    p.add_argument("--video", action="append", default=[], help="an input video (repeatable)")
    p.add_argument("--out", default=None, help="copy generated media into this folder")
    p.add_argument("--thread", default=None, help="continue this thread")
    _config_arg(p), _state_args(p), _gen_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="interactive chat with thread memory")
    p.add_argument("--thread", default=None)
    p.add_argument("--out", default=None, help="copy generated media into this folder")
    _config_arg(p), _state_args(p), _gen_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="the OpenAI-compatible HTTP backend and web chat page (docs/serving.md)")
    _config_arg(p), _state_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    group = p.add_argument_group("server settings", "the fields of serving.ServerSettings: what a request may hold")
    add_options(group, ServerSettings, renames=SERVE_RENAMES)
    group = p.add_argument_group(
        "replicas",
        "several model replicas under Ray Serve, sharing --db (PostgreSQL) and --artifacts (docs/serving.md)",
    )
    group.add_argument(
        "--ray",
        action="store_true",
        help="serve --replicas replicas behind Ray Serve's HTTP proxy (pip install 'mmgraph[ray]')",
    )
    group.add_argument(
        "--ray-address", default=None, help="deploy on this Ray cluster (e.g. auto); default: start a local one"
    )
    add_options(group, ReplicaSettings)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("graph", help="print the graph (mermaid), or check it (--check): wiring and parallel stages")
    p.add_argument("--config", default=None)
    p.add_argument(
        "--check",
        nargs="?",
        const="",
        default=None,
        metavar="CONFIG",
        help="validate the graph of CONFIG (or --config) instead: exit 1 naming every mis-wired node",
    )
    p.add_argument(
        "--graph",
        default=None,
        metavar="MODULE:FUNCTION",
        help="a custom graph: FUNCTION(config) returns a graphs.GraphBuilder, StateGraph or compiled graph",
    )
    p.set_defaults(func=cmd_graph)

    train = sub.add_parser("train", help="train: projectors (pt, it) or the whole tinyworld system (world)")
    stages = train.add_subparsers(dest="stage", required=True)
    for stage, help_text in (
        ("pt", "MM pre-training of the projectors on pairs"),
        ("it", "MM instruction tuning on conversations"),
    ):
        p = stages.add_parser(
            stage,
            help=help_text,
            description=(
                "Train input/output projectors and signal-token rows (and LoRA adapters with --lora) with encoders, "
                "LLM and generators frozen. Several processes: run under torchrun or accelerate launch. See "
                "docs/training.md."
            ),
        )
        _train_args(p)
        p.set_defaults(func=cmd_train)
    p = stages.add_parser(
        "world",
        help="the tinyworld recipe: every component of tiny-world from scratch",
        description="Train the tokenizer and LLM, the CLIP-style and Whisper encoders, the VAEs, "
        "MM PT and MM IT, the image / video / audio diffusion generators and the eval "
        "judges into OUT/weights (see docs/tinyworld.md).",
    )
    world_arguments(p)
    p.set_defaults(func=cmd_train_world)

    p = sub.add_parser(
        "eval", help="score a system on held-out tinyworld samples (understanding, generation, routing, latency)"
    )
    _config_arg(p)
    p.add_argument("--n", type=int, default=200, help="samples per row (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out samples")
    p.add_argument("--judges", default=None, help="judges folder (default: the packaged one)")
    p.add_argument("--out", default="out/eval", help="folder for results.json and report.html")
    p.add_argument("--no-latency", action="store_true", help="skip the demo-turn timing")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "bench",
        help="side-by-side benchmarks against Hugging Face LLaVA (docs/benchmarks.md)",
        description="Run our path and the Hugging Face baseline in one process on the same random "
        "weights and print throughput, latency and memory with their ratios.",
    )
    bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "attach",
        help="make a system any-to-any: add generators with their signal tokens and output projectors (docs/peers.md)",
        description="Write a system folder: SOURCE (a published checkpoint such as LLaVA or Llama 3.2 Vision, "
        "@tiny/<peer>, or an mmgraph system) with the generators of --generators added. What SOURCE had stays as it "
        "was, frozen; the new signal-token rows and output projectors start untrained: train them with "
        "`mmgraph train pt|it --config OUT`.",
    )
    p.add_argument("source", help="a peer checkpoint folder, @tiny/<peer>, or an mmgraph system folder / YAML")
    p.add_argument(
        "--generators",
        required=True,
        help=f"a preset ({', '.join(list_presets())}) or system YAML whose generators are added",
    )
    p.add_argument("--only", default=None, help="comma-separated names of the generators to take (default: all)")
    p.add_argument("--out", required=True, help="the system folder to write (system.yaml + trainable.safetensors)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the source's)")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("demo", help="a scripted any-to-any turn with an HTML report")
    p.add_argument("--out", default="out/demo")
    _config_arg(p)
    p.set_defaults(func=cmd_demo)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    run_bench(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:  # model-loading bars and library chatter drown the conversation; -v keeps them
        quiet_libraries()
    try:
        return args.func(args)
    except MMGraphError as exc:
        print(f"mmgraph: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
