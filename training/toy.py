"""A toy world for trying the training stages in a minute on a CPU: coloured squares captioned by their colour.

    python -m training.toy data/toy          # LM + images + data + data/toy/system.yaml
    mmgraph train pt --config data/toy/system.yaml --data data/toy/pt.jsonl --out runs/toy-pt

What it writes into the folder:

- ``lm/``: the ``@tiny/llama`` model taught the toy world's *language* (:func:`training.lm.train_text_lm`)
  on text-only dialogues, including ones where the colour is named in the question so that the answer can copy
  it -- the skill a real LLM brings to MM PT ("what colour is this?" -> read it from the context);
- ``images/*.png`` and ``pt.jsonl`` (PT pairs of both sides: ``{"image", "caption"}`` and
  ``{"caption", "generate": "image", "target"}``, the target image serving the optional latent-diffusion loss),
  ``it.jsonl`` (LLaVA-style dialogues: questions about an image and requests to draw one);
- ``system.yaml``: the ``tiny-random`` system with that LM, an empty system prompt, and image input and output.

The tests and ``docs/training.md`` use it.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from core.config import SystemConfig, load_config
from modalities.samples import square_image
from training.lm import train_text_lm
from training.report import quiet_libraries

COLOURS = ("red", "green", "blue", "yellow")
QUESTIONS = {
    "What is in the picture?": "a {c} square",
    "What colour is the square?": "It is {c}.",
}


def random_square(colour: str, rng: random.Random, size: int = 64):
    """A square of ``colour`` with a random side (30-60 % of the image) at a random place."""
    side = rng.uniform(0.3, 0.6)
    x0, y0 = rng.uniform(0.0, 1.0 - side), rng.uniform(0.0, 1.0 - side)
    return square_image(colour, size, (x0, y0, x0 + side, y0 + side))


def text_dialogues(n: int = 400, *, seed: int = 0, colours: tuple[str, ...] = COLOURS) -> list[list[tuple[str, str]]]:
    """Text-only (user, assistant) dialogues of the toy world; the colour is always named in the user turn."""
    rng = random.Random(seed)
    fillers = ["", "Look.", "Here is a picture.", "Please tell me.", "Hello!"]
    out = []
    for _ in range(n):
        colour, filler = rng.choice(colours), rng.choice(fillers)
        question = rng.choice(list(QUESTIONS))
        context = rng.choice(
            [
                f"{colour} {filler} {question}",
                f"{filler} {colour} {question}",
                f"a {colour} square. {question}",
                f"{colour}. {question}",
            ]
        )
        out.append([("user", " ".join(context.split())), ("assistant", QUESTIONS[question].format(c=colour))])
        if rng.random() < 0.25:
            out.append([("user", f"Draw a {colour} square."), ("assistant", "Here it is:")])
    return out


def toy_system_config(lm: str | Path, *, base: str = "tiny-random", full: bool = False) -> SystemConfig:
    """``base`` with the toy LM, no system prompt, and (unless ``full``) only image input and image output."""
    cfg = load_config(base)
    llm = cfg.llm.model_copy(update={"model": str(lm), "prompt": cfg.llm.prompt.model_copy(update={"system": ""})})
    update: dict = {"name": "toy-squares", "llm": llm}
    if not full:
        update["modalities"] = {"image": cfg.modalities["image"]}
        update["generators"] = {"image": cfg.generators["image"]}
    return cfg.model_copy(update=update)


def write_colour_squares(
    folder: str | Path, n: int = 48, *, seed: int = 0, colours: tuple[str, ...] = COLOURS
) -> dict[str, Path]:
    """Write ``n`` square images and the ``pt.jsonl`` / ``it.jsonl`` files about them into ``folder``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pt, it = [], []
    for i in range(n):
        colour = colours[i % len(colours)]
        name = f"images/{i:04d}-{colour}.png"
        random_square(colour, rng).save(folder / name)
        caption = f"a {colour} square"
        pt.append({"id": f"see-{i}", "image": name, "caption": caption})
        pt.append({"id": f"draw-{i}", "caption": caption, "generate": "image", "target": name})
        it.append(
            {
                "id": f"ask-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the square?"},
                    {"from": "gpt", "value": f"It is {colour}."},
                ],
            }
        )
        it.append(
            {
                "id": f"paint-{i}",
                "conversations": [
                    {"from": "human", "value": f"Draw {caption}."},
                    {"from": "gpt", "value": "Here it is: <image>"},
                ],
                "output_captions": {"image": [caption]},
                "output_media": {"image": [name]},
            }
        )
    paths = {}
    for kind, rows in (("pt", pt), ("it", it)):
        paths[kind] = folder / f"{kind}.jsonl"
        paths[kind].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def build_toy(
    folder: str | Path, n: int = 48, *, seed: int = 0, lm_steps: int = 600, progress: bool = True
) -> dict[str, Path]:
    """Everything :mod:`this module <training.toy>` describes; returns the written paths."""
    folder = Path(folder)
    lm = train_text_lm(
        toy_system_config("@tiny/llama").llm,
        text_dialogues(seed=seed),
        folder / "lm",
        steps=lm_steps,
        lr=1e-2,
        seed=seed,
        progress=progress,
    )
    paths = write_colour_squares(folder, n, seed=seed)
    paths["lm"] = lm
    paths["config"] = folder / "system.yaml"
    toy_system_config(lm.resolve()).save(paths["config"])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write into")
    parser.add_argument("--n", type=int, default=48, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quiet_libraries()
    for kind, path in build_toy(args.out, args.n, seed=args.seed).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
