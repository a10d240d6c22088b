"""The ``mmgraph`` command line: ``run``, ``chat``, ``serve``, ``graph``, ``demo``, ``train``, ``eval`` and ``bench``.

mmgraph run "What is this? Then draw it." --image a.png --generate image --out out/
mmgraph chat                       # REPL: /image PATH, /audio PATH, /video PATH, /generate image, /new, /quit
mmgraph serve --port 8000          # OpenAI-compatible HTTP backend + web chat page at http://127.0.0.1:8000/
mmgraph graph [--config CONFIG]    # the graph as mermaid
mmgraph graph --check tiny-world   # validate the wiring (networkx) and print the parallel stages
mmgraph demo --out out/demo        # a scripted any-to-any turn, printed as it streams, with an HTML report
mmgraph train pt --config system.yaml --data pairs.jsonl --out runs/pt      # train the projectors
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import DEFAULT_PRESET, list_presets, load_config
from core.errors import ConfigError, MMGraphError


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"preset name ({', '.join(list_presets())}) or a system YAML; default {DEFAULT_PRESET}",
    )
    parser.add_argument("--weights", default=None, help="directory of trained projector weights")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the config's)")


def _state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="thread database (SQLite); default $MMGRAPH_HOME/threads.sqlite")
    parser.add_argument("--artifacts", default=None, help="artifact store folder; default $MMGRAPH_HOME/artifacts")
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
        from graphs import load_graph

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
    from orchestrator.assistant import Assistant

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
          /generate NAME[,NAME]  (require outputs for the next message)   /new  (new thread)   /quit"""


def cmd_chat(args: argparse.Namespace) -> int:
    import uuid

    bot = _assistant(args)
    thread = args.thread or uuid.uuid4().hex
    attached: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
    generate: list[str] = []
    print(f"mmgraph chat on {bot.config.name} (thread {thread})\n{CHAT_HELP}")
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
    from graphs import GraphBuilder, GraphError, check_graph, load_graph

    if args.check and args.config and args.check != args.config:
        raise ConfigError(f"--check {args.check} and --config {args.config} name different configs; give one")
    config = load_config(args.check or args.config)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from mmgraph.demo import run_demo

    return run_demo(args)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving import ServerSettings, create_app

    settings = ServerSettings(
        queue_size=args.queue_size,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        allowed_media_domains=args.allow_media_domain,
        allowed_local_media_path=args.allowed_local_media_path,
    )
    app = create_app(config=args.config, settings=settings, **_assistant_kwargs(args))
    print(
        f"mmgraph: serving {app.app.state.server.model} on http://{args.host}:{args.port}/ "
        f"(OpenAI base URL http://{args.host}:{args.port}/v1)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training import train

    options = {
        "epochs": args.epochs,
        "max_steps": args.steps,
        "stop_after": args.stop_after,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lora_lr": args.lora_lr,
        "align_weight": args.align_weight,
        "diffusion_weight": args.diffusion_weight,
        "save_every": args.save_every,
        "cache_dir": args.cache,
        "seed": args.seed,
        "lora_r": args.lora_r,
        "compile": args.compile,
        "group_by_length": args.group_by_length,
        "micro_batches": args.micro_batches,
    }
    options = {k: v for k, v in options.items() if v is not None}
    result = train(
        args.config,
        args.data,
        args.out,
        stage=args.stage,
        init=args.init,
        lora=args.lora,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device or "auto",
        progress=not args.no_progress,
        **options,
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
    p.add_argument("--lora", action="store_true", help="also train LoRA adapters on the LLM")
    p.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 8)")
    p.add_argument("--lora-lr", type=float, default=None, help="learning rate of the LoRA adapters (default 2e-4)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="length of the run in steps (overrides --epochs)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N steps, resumable with --resume")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (default 8)")
    p.add_argument("--lr", type=float, default=None, help="projector learning rate (default: pt 1e-3, it 2e-4)")
    p.add_argument("--align-weight", type=float, default=None, help="weight of the alignment loss (default 1)")
    p.add_argument(
        "--diffusion-weight",
        type=float,
        default=None,
        help="add the latent-diffusion loss through the frozen generator with this weight (needs output "
        "target files in the data; image and video generators)",
    )
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT holds a run")
    p.add_argument("--cache", default=None, help="feature cache folder (default $MMGRAPH_HOME/cache/features)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="run the frozen LLM through torch.compile (a one-off compilation, then faster GPU steps)",
    )
    p.add_argument(
        "--group-by-length",
        action="store_true",
        default=None,
        help="batch samples of similar token length together (less padding, same samples per epoch)",
    )
    p.add_argument(
        "--micro-batches",
        type=int,
        default=None,
        help="cut each batch into N micro-batches of similar token length and accumulate: the same "
        "steps, less padding (faster on a CPU)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars or audit table")


def cmd_train_world(args: argparse.Namespace) -> int:
    from tinyworld.recipe import run_from_args

    run_from_args(args)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tinyworld.evaluate import evaluate

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
    p.add_argument("--queue-size", type=int, default=8, help="requests that may wait for the model (then 429)")
    p.add_argument("--max-body-mb", type=float, default=48.0, help="largest request body in MiB (then 413)")
    p.add_argument(
        "--allow-media-domain",
        action="append",
        default=[],
        metavar="HOST",
        help="allow http(s) media URLs on this host (repeatable; default: only data: URLs)",
    )
    p.add_argument(
        "--allowed-local-media-path",
        default=None,
        metavar="DIR",
        help="allow file:// media URLs under this folder (default: refused)",
    )
    p.add_argument("--log-level", default="info")
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
    from tinyworld.recipe import add_arguments

    add_arguments(p)
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
    from benchmarks.run import add_arguments as bench_arguments

    bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="a scripted any-to-any turn with an HTML report")
    p.add_argument("--out", default="out/demo")
    _config_arg(p)
    p.set_defaults(func=cmd_demo)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.run import run_from_args

    run_from_args(args)
    return 0


def _quiet_libraries() -> None:
    """Model-loading bars and library deprecation chatter drown the conversation; ``-v`` keeps them."""
    import diffusers
    import transformers

    for lib in (transformers, diffusers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_libraries()
    try:
        return args.func(args)
    except MMGraphError as exc:
        print(f"mmgraph: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
