"""MM PT and MM IT data sets of the tinyworld, written in the training module's file formats.

:func:`write_datasets` renders things into ``media/`` (PNG pictures, 8-frame MP4 clips, WAV sounds) and writes

- ``pt.jsonl``: LLaVA / NExT-GPT PT pairs of both sides -- ``{"image": ..., "caption": ...}`` (describe what is
  attached) and ``{"caption": ..., "generate": "image"}`` (the output projector aligned to the generator's text
  encoder on the caption);
- ``it.jsonl``: conversations of 1-3 exchanges mixing questions about attached things, requests to generate
  (the reply restates the request and ends in the output placeholder) and plain chat.

Every thing is rendered from its own seed, drawn from ``seed``; :func:`held_out_seed` gives seeds no training set
uses, for evaluation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tqdm.auto import tqdm

from modalities.media import sniff_mime
from tinyworld import phrasing
from tinyworld import text as world_text
from tinyworld.world import THINGS, Thing, encode

_SUFFIX = {"image": "png", "video": "mp4", "audio": "wav"}
_MIME_SUFFIX = {"image/png": "png", "image/jpeg": "jpg", "video/mp4": "mp4", "image/gif": "gif", "audio/wav": "wav"}
_HELD_OUT = 1 << 40


def held_out_seed(i: int) -> int:
    """Render seed ``i`` of the held-out range (training sets draw seeds below ``2**40``)."""
    return _HELD_OUT + i


class _MediaWriter:
    """Writes each rendered thing once under ``media/`` and returns its path relative to the data folder."""

    def __init__(self, folder: Path, rng: random.Random, augment: float = 0.0) -> None:
        self.folder, self.rng, self.count, self.augment = folder, rng, 0, augment
        (folder / "media").mkdir(parents=True, exist_ok=True)

    def __call__(self, thing: Thing) -> str:
        augmented = bool(self.augment) and self.rng.random() < self.augment
        data = encode(thing, self.rng.randrange(_HELD_OUT), augment=augmented)
        suffix = _MIME_SUFFIX.get(sniff_mime(data) or "", _SUFFIX[thing.kind]) if augmented else _SUFFIX[thing.kind]
        name = f"media/{self.count:05d}-{thing.kind}.{suffix}"
        (self.folder / name).write_bytes(data)
        self.count += 1
        return name


def _conversation(exchanges: list[world_text.Exchange], write: _MediaWriter) -> dict:
    row: dict = {"conversations": []}
    for ex in exchanges:
        for thing in ex.media_in:
            row.setdefault(thing.kind, []).append(write(thing))
        for thing, wanted in ex.media_out:
            row.setdefault("output_captions", {}).setdefault(thing.kind, []).append(wanted)
        row["conversations"] += [{"from": "human", "value": ex.user}, {"from": "gpt", "value": ex.assistant}]
    return row


def task_schedule(mix: dict[str, int]) -> list[tuple[str, str]]:
    """One cycle of PT tasks, ``"kind/task"`` weights spread evenly (smooth weighted round robin): with
    ``{"video/describe": 2, "image/describe": 1}`` the cycle is video, image, video."""
    for key, weight in mix.items():
        kind, _, task = key.partition("/")
        if kind not in THINGS or task not in ("describe", "generate") or weight < 0:
            raise ValueError(f"bad PT mix entry {key!r}: {weight}; keys are <image|video|audio>/<describe|generate>")
    credit = {key: 0 for key in mix}
    cycle = []
    for _ in range(sum(mix.values())):
        for key in mix:
            credit[key] += mix[key]
        best = max(credit, key=credit.__getitem__)
        credit[best] -= sum(mix.values())
        kind, _, task = best.partition("/")
        cycle.append((kind, task))
    return cycle


EVEN_MIX = {f"{kind}/{task}": 1 for task in ("describe", "generate") for kind in THINGS}

#: The recipe's PT mix: clips are described most, since clip direction is the slowest attribute to learn through the
#: frozen LLM, sounds least (they are the quickest); generation rows need fewer steps once the signal rows start
#: distinct (see ``Backbone._init_new_rows``). How it compares with an even mix: docs/tinyworld.md.
PT_MIX = {
    "image/describe": 4,
    "video/describe": 6,
    "audio/describe": 2,
    "image/generate": 2,
    "video/generate": 3,
    "audio/generate": 1,
}


def write_datasets(
    folder: str | Path,
    *,
    pt: int = 3000,
    it: int = 3000,
    seed: int = 0,
    mix: dict[str, int] | None = None,
    progress: bool = True,
    it_turns: int = 3,
    follow_ups: float = 0.0,
    free_phrasing: float = 0.0,
    honest_answers: float = 0.0,
    augment: float = 0.0,
    shapes: dict[str, float] | None = None,
    novel: float = 0.0,
) -> dict[str, Path]:
    """Write ``pt`` PT rows and ``it`` IT conversations into ``folder``; returns ``{"pt": path, "it": path}``.

    ``mix`` weighs the PT tasks (``"video/describe": 3`` makes describing clips three times as common as a
    weight-1 task); the default is :data:`PT_MIX` (:data:`EVEN_MIX` describes and generates each kind equally
    often). IT conversations have up to ``it_turns`` exchanges; ``follow_ups`` of the later ones revisit a thing
    met earlier with one attribute changed (:func:`tinyworld.text.follow_up`), so long threads need not echo
    earlier turns. ``free_phrasing`` / ``honest_answers``: the share of IT exchanges written freely (training split of
    :mod:`tinyworld.phrasing`) / with honest answers; ``augment``: the share of rendered media drawn with the world
    renderer's augmentation (:data:`tinyworld.world.AUGMENT`); ``shapes``: the weights of a free generation exchange's
    shapes (:data:`tinyworld.phrasing.GENERATE_SHAPES`); ``novel``: :func:`tinyworld.phrasing.novel_words`' share.
    All 0: the shipped data, draw for draw."""
    folder = Path(folder)
    rng = random.Random(seed)
    write = _MediaWriter(folder, rng, augment)
    cycle = task_schedule(mix or PT_MIX)
    pt_rows = []
    for i in tqdm(range(pt), desc="PT data", disable=not progress, leave=False):
        kind, task = cycle[i % len(cycle)]
        thing = THINGS[kind].sample(rng)
        if task == "describe":
            pt_rows.append({"id": f"pt-{i}", thing.kind: write(thing), "caption": world_text.caption(thing)})
        else:
            wanted = world_text.request_caption(thing) if rng.random() < 0.7 else world_text.caption(thing)
            pt_rows.append({"id": f"pt-{i}", "caption": wanted, "generate": thing.kind})
    it_rows = []
    for i in tqdm(range(it), desc="IT data", disable=not progress, leave=False):
        dialogue = phrasing.dialogue(
            rng,
            max_turns=it_turns,
            follow_ups=follow_ups,
            free=free_phrasing,
            honest_share=honest_answers,
            shapes=shapes,
            novel=novel,
        )
        it_rows.append({"id": f"it-{i}", **_conversation(dialogue, write)})
    paths = {}
    for name, rows in (("pt", pt_rows), ("it", it_rows)):
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
