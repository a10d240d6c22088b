"""``mmgraph demo``: one scripted any-to-any turn on the default system, streamed, with an HTML report.

Until the tinyworld issue ships trained weights, the default system is ``tiny-random``: every component is a
real Hugging Face / diffusers class but with random weights, so the demo shows the machinery working end to
end (image, audio and video in; image, video and audio out) while its text and media are noise.
"""

from __future__ import annotations

import html
import shutil
import sys
import time
from pathlib import Path

from orchestrator import samples


def write_report(reply, prompt: str, inputs: dict[str, Path], out: Path, title: str, note: str) -> Path:
    """A self-contained HTML page: the inputs, then the reply's parts in order, media inline."""
    def media_tag(path: str, mime: str) -> str:
        if mime.startswith("image/"):
            return f'<img src="{path}" style="width:192px;image-rendering:pixelated">'
        if mime.startswith("audio/"):
            return f'<audio controls src="{path}"></audio>'
        return f'<video controls loop autoplay muted src="{path}" style="width:192px"></video>'

    rows = [f"<p><b>user:</b> {html.escape(prompt)}</p>"]
    for modality, path in inputs.items():
        mime = {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}[modality]
        rows.append(f"<p>{modality} input: {media_tag(path.name, mime)}</p>")
    rows.append("<p><b>assistant:</b></p>")
    for part in reply.parts:
        if part.type == "text":
            rows.append(f"<p>{html.escape(part.text)}</p>")
        else:
            name = f"{part.artifact.generator}-{part.artifact.id[:12]}{part.artifact.path.suffix}"
            shutil.copyfile(part.artifact.path, out / name)
            rows.append(f"<p>{part.artifact.modality} ({part.artifact.mime}): {media_tag(name, part.artifact.mime)}</p>")
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<body style='font-family:sans-serif;max-width:720px;margin:2em auto'><h1>{html.escape(title)}</h1>"
            f"<p><i>{html.escape(note)}</i></p>{''.join(rows)}</body>")
    report = out / "report.html"
    report.write_text(page)
    return report


def run_demo(args) -> int:
    from orchestrator.assistant import Assistant

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = {"image": out / "input.png", "audio": out / "input.wav", "video": out / "input.mp4"}
    inputs["image"].write_bytes(samples.png_bytes(colour="red"))
    inputs["audio"].write_bytes(samples.wav_bytes(freq=440.0))
    inputs["video"].write_bytes(samples.mp4_bytes(colour="blue"))

    print("loading the default system ...", file=sys.stderr)
    bot = Assistant.from_config(args.config, weights=args.weights, device=args.device, db=out / "threads.sqlite",
                                artifacts=out / "artifacts")
    note = ""
    if bot.config.name == "tiny-random":
        note = ("This is the tiny-random system: real model classes with RANDOM weights. The pipeline runs end "
                "to end, but the text and media are noise until trained weights ship (the tinyworld preset).")
        print(f"NOTE: {note}", file=sys.stderr)
    prompt = "What is in this picture, this clip and this sound? Then draw a picture, animate a video and play a sound."
    print(f"user> {prompt}\nbot> ", end="", flush=True)
    start = time.perf_counter()
    reply = None
    for event in bot.stream(prompt, images=[inputs["image"]], audio=[inputs["audio"]], video=[inputs["video"]],
                            generate=list(bot.system.generator_names), seed=0):
        if event.type == "token":
            print(event.data["text"], end="", flush=True)
        elif event.type == "progress" and event.data["step"] == event.data["total"]:
            print(f"\n  [{event.data['generator']} done: {event.data['total']} steps]", end="", flush=True)
        elif event.type == "done":
            reply = event.reply
    elapsed = time.perf_counter() - start
    print()
    for artifact in reply.artifacts:
        print(f"  -> {artifact.modality}: {artifact.mime}, {artifact.size} bytes")
    report = write_report(reply, prompt, inputs, out, f"mmgraph demo ({bot.config.name})", note)
    print(f"turn took {elapsed:.2f} s; report: {report}")
    return 0
