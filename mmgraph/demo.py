"""``mmgraph demo``: a scripted any-to-any conversation on the default system, streamed, with an HTML report.

The default system is ``tiny-world`` (trained by ``tinyworld/recipe.py``, shipped in the package): the script
shows it a picture, a clip and a sound of its world and asks about them, and asks it to draw, animate and play
things, all in one thread. Every turn is printed as it streams; ``OUT/report.html`` shows the conversation with
the inputs and the generated media inline. On the ``tiny-random`` system the same script runs, but the
components have random weights, so the text and media are noise.
"""

from __future__ import annotations

import html
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.assistant import Assistant
from tinyworld.text import caption
from tinyworld.world import Clip, Picture, Sound, encode

_MIME = {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}
_SUFFIX = {"image": ".png", "audio": ".wav", "video": ".mp4"}


@dataclass
class ScriptTurn:
    text: str
    attach: dict[str, object] = field(default_factory=dict)  # modality -> tinyworld Thing


def script() -> list[ScriptTurn]:
    """The demo conversation: understand an image, a video and a sound; generate all three."""
    return [
        ScriptTurn(
            "What colour is the shape? Then draw a blue circle.",
            {"image": Picture(colour="red", shape="triangle", position="top left", size="large")},
        ),
        ScriptTurn("Which way does it move?", {"video": Clip(colour="green", shape="square", direction="right")}),
        ScriptTurn("How many beeps are there?", {"audio": Sound(pitch="high", waveform="square", beeps=3)}),
        ScriptTurn("Describe it.", {"image": Picture(colour="purple", shape="cross", position="centre", size="small")}),
        ScriptTurn("Animate a yellow triangle moving down."),
        ScriptTurn("Play two low beeps."),
    ]


def media_tag(path: str, mime: str) -> str:
    if mime.startswith("image/"):
        return f'<img src="{path}" style="width:128px;image-rendering:pixelated">'
    if mime.startswith("audio/"):
        return f'<audio controls src="{path}"></audio>'
    return f'<video controls loop autoplay muted src="{path}" style="width:128px;image-rendering:pixelated"></video>'


def write_report(turns: list[dict], out: Path, title: str, note: str) -> Path:
    """A self-contained HTML page of the conversation: each user turn with its inputs, then the reply's parts in
    order with generated media inline (copied next to the page)."""
    rows = []
    for turn in turns:
        inputs = "".join(f"<div>{m} input: {media_tag(p.name, _MIME[m])}</div>" for m, p in turn["inputs"].items())
        rows.append(
            f"<div style='margin:1em 0;padding:.5em;background:#eef'><b>user:</b> "
            f"{html.escape(turn['text'])}{inputs}</div>"
        )
        parts = []
        reply = turn["reply"]
        for part in reply.parts:
            if part.type == "text":
                parts.append(html.escape(part.text))
            else:
                artifact = reply.artifact(part)
                name = f"{artifact.generator}-{artifact.id[:12]}{artifact.path.suffix}"
                shutil.copyfile(artifact.path, out / name)
                parts.append(f"<div>{media_tag(name, artifact.mime)}</div>")
        rows.append(
            f"<div style='margin:1em 0 1em 2em;padding:.5em;background:#efe'><b>assistant</b> "
            f"<small>({turn['seconds']:.2f} s):</small> {''.join(parts)}</div>"
        )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<body style='font-family:sans-serif;max-width:760px;margin:2em auto'><h1>{html.escape(title)}</h1>"
        f"<p><i>{html.escape(note)}</i></p>{''.join(rows)}</body>"
    )
    report = out / "report.html"
    report.write_text(page)
    return report


def run_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("loading the default system ...", file=sys.stderr)
    bot = Assistant.from_config(
        args.config, weights=args.weights, device=args.device, db=out / "threads.sqlite", artifacts=out / "artifacts"
    )
    note = f"{bot.config.name}: trained by the tinyworld recipe, shipped in the package; CPU, greedy decoding."
    if bot.config.name == "tiny-random":
        note = (
            "This is the tiny-random system: real model classes with RANDOM weights. The conversation runs end "
            "to end, but its text and media are noise."
        )
        print(f"NOTE: {note}", file=sys.stderr)
    thread = f"demo-{time.time_ns()}"
    turns = []
    for i, turn in enumerate(script()):
        inputs = {}
        for modality, thing in turn.attach.items():
            if modality not in bot.system.config.modalities:
                continue
            inputs[modality] = out / f"input-{i}{_SUFFIX[modality]}"
            inputs[modality].write_bytes(encode(thing, seed=i))
        shown = " ".join(f"[{m}: {caption(thing)}]" for m, thing in turn.attach.items())
        print(f"\nuser> {turn.text} {shown}".rstrip())
        print("bot>  ", end="", flush=True)
        start = time.perf_counter()
        reply = None
        media = {
            "images": [inputs["image"]] if "image" in inputs else [],
            "video": [inputs["video"]] if "video" in inputs else [],
            "audio": [inputs["audio"]] if "audio" in inputs else [],
        }
        for event in bot.stream(turn.text, thread_id=thread, seed=i, **media):
            if event.type == "token":
                print(event.data["text"], end="", flush=True)
            elif event.type == "progress" and event.data["step"] == event.data["total"]:
                print(f" [{event.data['generator']}: {event.data['total']} steps]", end="", flush=True)
            elif event.type == "done":
                reply = event.reply
        seconds = time.perf_counter() - start
        print(f"  ({seconds:.2f} s)")
        for artifact in reply.artifacts:
            print(f"      -> {artifact.modality}: {artifact.mime}, {artifact.size} bytes")
        turns.append({"text": turn.text, "inputs": inputs, "reply": reply, "seconds": seconds})
    report = write_report(turns, out, f"mmgraph demo ({bot.config.name})", note)
    print(f"\nreport: {report}")
    return 0
