"""``mmgraph eval``: score a system on freshly rendered, held-out tinyworld samples.

Every row talks to the system through the public :class:`~orchestrator.assistant.Assistant` (the LangGraph
run, the encoders, the LLM, the generators), one new thread per question:

- **understanding** -- attach a rendered picture / clip / sound, ask about one attribute, and count the reply
  right when the attribute's true value is the only value of that attribute it names
  (:func:`tinyworld.text.values_named`);
- **generation** -- ask for a picture / video / sound of given attributes; the reply must carry exactly one medium
  of that kind, and the independent judges (:mod:`tinyworld.judges`, trained separately from every model of the
  system) must find every requested attribute in it;
- **routing** -- over all of those turns: generation requests that produced exactly the asked modality, and
  questions / chat that produced no media at all;
- **latency** -- a demo turn with one image in and one image out (median of a few runs after a warm-up).

Renders use seeds from the held-out range (:func:`tinyworld.data.held_out_seed`), which no training set draws.
Results go to ``OUT/results.json`` and ``OUT/report.html`` (the table and a grid of generated samples).
"""

from __future__ import annotations

import html
import json
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.hub import resolve_model
from orchestrator.assistant import Assistant
from tinyworld import text as world_text
from tinyworld.data import held_out_seed
from tinyworld.judges import Judges
from tinyworld.world import THINGS, Thing, encode

#: understanding rows: kind -> attributes asked (the issue's bars)
UNDERSTANDING: dict[str, tuple[str, ...]] = {
    "image": ("colour", "shape", "position"),
    "video": ("colour", "shape", "direction"),
    "audio": ("pitch", "beeps", "waveform"),
}
#: generation rows: kind -> attributes the judge must find
GENERATION: dict[str, tuple[str, ...]] = {
    "image": ("colour", "shape"),
    "video": ("colour", "shape", "direction"),
    "audio": ("pitch", "beeps"),
}
#: row name -> bar (fraction); latency bar in seconds
BARS: dict[str, float] = {
    **{
        f"{kind} understanding: {a}": 0.95 if kind == "image" else 0.90
        for kind, attrs in UNDERSTANDING.items()
        for a in attrs
    },
    "image generation: colour + shape": 0.90,
    "video generation: colour + shape + direction": 0.80,
    "audio generation: pitch + beeps": 0.80,
    "routing: generates the asked modality": 0.98,
    "routing: generates nothing when not asked": 0.98,
}
LATENCY_BAR = 3.0
_MEDIA_ARG = {"image": "images", "video": "video", "audio": "audio"}


@dataclass
class Row:
    name: str
    correct: int = 0
    total: int = 0
    bar: float | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def passed(self) -> bool | None:
        return None if self.bar is None else self.accuracy >= self.bar

    def add(self, ok: bool) -> None:
        self.correct += bool(ok)
        self.total += 1


@dataclass
class EvalResult:
    rows: dict[str, Row]
    latency: float | None = None
    samples: list[dict] = field(default_factory=list)  # generated media for the report grid

    def table(self) -> str:
        """The results as a Markdown table."""
        lines = ["| row | n | score | bar | |", "|---|---|---|---|---|"]
        for row in self.rows.values():
            bar = f"≥ {row.bar:.0%}" if row.bar is not None else ""
            mark = {True: "pass", False: "**FAIL**", None: ""}[row.passed]
            lines.append(f"| {row.name} | {row.total} | {row.accuracy:.1%} | {bar} | {mark} |")
        if self.latency is not None:
            mark = "pass" if self.latency <= LATENCY_BAR else "**FAIL**"
            lines.append(
                f"| demo turn, 1 image in + 1 image out (median s) | 5 | {self.latency:.2f} s "
                f"| ≤ {LATENCY_BAR:.0f} s | {mark} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "rows": {k: {**asdict(r), "accuracy": r.accuracy} for k, r in self.rows.items()},
            "latency_s": self.latency,
        }


class Evaluator:
    """Runs the rows against one assistant; ``judges`` score generated media."""

    def __init__(self, assistant, judges, *, seed: int = 0, progress: bool = True, keep: int = 12) -> None:
        self.bot, self.judges, self.progress, self.keep = assistant, judges, progress, keep
        self.rng = random.Random(seed)
        self.seed_base = seed * 1_000_003
        self.counter = 0
        self.rows = {name: Row(name, bar=bar) for name, bar in BARS.items()}
        self.samples: list[dict] = []

    def _render(self, thing: Thing) -> bytes:
        self.counter += 1
        return encode(thing, held_out_seed(self.seed_base + self.counter))

    def _routing(self, reply, wanted: str | None) -> bool:
        kinds = [a.modality for a in reply.artifacts]
        if wanted is None:
            ok = not kinds
            self.rows["routing: generates nothing when not asked"].add(ok)
        else:
            ok = kinds == [wanted]
            self.rows["routing: generates the asked modality"].add(ok)
        return ok

    def understanding(self, kind: str, attribute: str, n: int) -> None:
        row = self.rows[f"{kind} understanding: {attribute}"]
        for _ in tqdm(range(n), desc=row.name, disable=not self.progress, leave=False):
            thing = THINGS[kind].sample(self.rng)
            question = self.rng.choice(world_text.QUESTIONS[kind][attribute])
            reply = self.bot.chat(question, **{_MEDIA_ARG[kind]: [self._render(thing)]}, seed=0)
            row.add(world_text.values_named(reply.text, kind, attribute) == {str(getattr(thing, attribute))})
            self._routing(reply, None)

    def chat(self, n: int) -> None:
        for i in range(n):
            reply = self.bot.chat(world_text.CHAT[i % len(world_text.CHAT)][0], seed=0)
            self._routing(reply, None)

    def generation(self, kind: str, n: int) -> None:
        attributes = GENERATION[kind]
        row = self.rows[f"{kind} generation: {' + '.join(attributes)}"]
        templates = {"image": world_text.DRAW, "video": world_text.ANIMATE, "audio": world_text.PLAY}[kind]
        for i in tqdm(range(n), desc=row.name, disable=not self.progress, leave=False):
            thing = THINGS[kind].sample(self.rng)
            wanted = world_text.request_caption(thing)
            reply = self.bot.chat(self.rng.choice(templates).format(x=wanted), seed=i)
            ok = self._routing(reply, kind)
            verdict: dict[str, Any] = {}
            if ok:
                artifact = reply.artifacts[0]
                verdict = self.judges.judge(kind, artifact.path.read_bytes())
                ok = all(str(verdict[a]) == str(getattr(thing, a)) for a in attributes)
                if sum(s["kind"] == kind for s in self.samples) < self.keep:
                    self.samples.append(
                        {
                            "kind": kind,
                            "asked": wanted,
                            "judged": {a: str(verdict[a]) for a in attributes},
                            "ok": ok,
                            "path": str(artifact.path),
                            "mime": artifact.mime,
                        }
                    )
            row.add(ok)

    def latency(self, runs: int = 5) -> float:
        """Median seconds of a turn with one image in and one image out (after one warm-up turn)."""
        picture, wanted = THINGS["image"].sample(self.rng), THINGS["image"].sample(self.rng)
        prompt = f"What colour is the shape? Then draw {world_text.request_caption(wanted)}."
        times = []
        for i in range(runs + 1):
            start = time.perf_counter()
            self.bot.chat(prompt, images=[self._render(picture)], seed=i)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])


def evaluate(
    config: Any = None,
    *,
    weights: Any = None,
    n: int = 200,
    seed: int = 0,
    judges: Any = None,
    out: str | Path | None = None,
    latency: bool = True,
    progress: bool = True,
    assistant=None,
    device: str | None = None,
) -> EvalResult:
    """Score ``config`` (default: the default preset) with ``n`` held-out samples per row; write the report into
    ``out`` if given. ``judges``: a :class:`tinyworld.judges.Judges` or a folder (default: the packaged one)."""
    if judges is None or isinstance(judges, (str, Path)):
        judges = Judges.load(judges or resolve_model("@tinyworld/judges"))
    with tempfile.TemporaryDirectory() as tmp:
        bot = assistant or Assistant.from_config(
            config, weights=weights, device=device, db=Path(tmp) / "threads.sqlite", artifacts=Path(tmp) / "artifacts"
        )
        ev = Evaluator(bot, judges, seed=seed, progress=progress)
        for kind, attributes in UNDERSTANDING.items():
            for attribute in attributes:
                ev.understanding(kind, attribute, n)
        ev.chat(max(n // 10, len(world_text.CHAT)))
        for kind in GENERATION:
            ev.generation(kind, n)
        result = EvalResult(ev.rows, ev.latency() if latency else None, ev.samples)
        if out is not None:
            write_report(result, Path(out), title=f"mmgraph eval ({bot.config.name}, n={n}, seed={seed})")
    return result


def write_report(result: EvalResult, out: Path, *, title: str) -> Path:
    """``out/results.json`` and ``out/report.html``: the table and a grid of generated samples (media copied)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_dict(), indent=2))
    (out / "media").mkdir(exist_ok=True)
    cells = []
    for i, sample in enumerate(result.samples):
        src = Path(sample["path"])
        name = f"media/{i:03d}-{sample['kind']}{src.suffix}"
        shutil.copyfile(src, out / name)
        mime = sample["mime"]
        if mime.startswith("image/"):
            tag = f'<img src="{name}" width="96" style="image-rendering:pixelated">'
        elif mime.startswith("video/"):
            tag = f'<video src="{name}" width="96" autoplay loop muted style="image-rendering:pixelated"></video>'
        else:
            tag = f'<audio controls src="{name}" style="width:150px"></audio>'
        judged = ", ".join(f"{k}: {v}" for k, v in sample["judged"].items())
        colour = "#2a2" if sample["ok"] else "#c22"
        cells.append(
            f'<figure style="display:inline-block;margin:4px;width:160px;vertical-align:top">{tag}'
            f'<figcaption style="font-size:12px">asked: {html.escape(sample["asked"])}<br>'
            f'<span style="color:{colour}">judged: {html.escape(judged)}</span></figcaption></figure>'
        )
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.total}</td><td>{r.accuracy:.1%}</td>"
        f"<td>{'' if r.bar is None else f'≥ {r.bar:.0%}'}</td>"
        f"<td>{ {True: 'pass', False: '<b>FAIL</b>', None: ''}[r.passed] }</td></tr>"
        for r in result.rows.values()
    )
    if result.latency is not None:
        rows += (
            f"<tr><td>demo turn, 1 image in + 1 image out (median)</td><td>5</td><td>{result.latency:.2f} s</td>"
            f"<td>≤ {LATENCY_BAR:.0f} s</td><td>{'pass' if result.latency <= LATENCY_BAR else '<b>FAIL</b>'}</td></tr>"
        )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<body style='font-family:sans-serif;max-width:960px;margin:2em auto'><h1>{html.escape(title)}</h1>"
        "<table border=1 cellpadding=4 style='border-collapse:collapse'><tr><th>row</th><th>n</th><th>score</th>"
        f"<th>bar</th><th></th></tr>{rows}</table><h2>Generated samples</h2>"
        "<p>What was asked, and what the independent judges found (green: everything asked was found).</p>"
        f"{''.join(cells)}</body>"
    )
    report = out / "report.html"
    report.write_text(page)
    return report
