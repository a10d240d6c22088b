"""Draw docs/img/architecture.png from the real import graph: the rooms on their floors, and the dependency
matrix of which room imports which (how many module pairs).

    .venv/bin/python docs/architecture.py [docs/img/architecture.png]

The floors are read from the layers contract in pyproject.toml (the one `make lint` enforces), the imports from
the code with grimp (import-linter's graph builder), so the picture shows what the code does.
"""

from __future__ import annotations

import sys
import tomllib
from collections import Counter
from pathlib import Path

import grimp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

JOBS = {
    "mmgraph": "front door: public API, cli, demo",
    "benchmarks": "side-by-side measurements",
    "tinyworld": "synthetic world, recipe, eval",
    "serving": "OpenAI HTTP, web page",
    "training": "MM PT, MM IT",
    "orchestrator": "the model + Assistant API",
    "graphs": "LangGraph wiring",
    "generators": "output side",
    "modalities": "input side",
    "core": "configs, turns, registries",
}


def floors() -> list[list[str]]:
    """The layers contract of pyproject.toml, top floor first (``a | b`` share a floor)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return [[room.strip() for room in layer.split("|")] for layer in layers]


def room_imports(rooms: list[str]) -> Counter[tuple[str, str]]:
    """(importer room, imported room) -> how many (module, module) import pairs cross between them."""
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*rooms)
    counts: Counter[tuple[str, str]] = Counter()
    for module in graph.modules:
        source = module.split(".")[0]
        for imported in graph.find_modules_directly_imported_by(module):
            target = imported.split(".")[0]
            if target != source and target in rooms:
                counts[source, target] += 1
    return counts


def draw(out: Path) -> Path:
    """Left: the floors, top first. Right: the dependency matrix -- row room imports column room, the number is
    how many module pairs do; layering means every count sits right of the diagonal (an upward import, or one
    between the rooms of a floor, would be red)."""
    layout = floors()
    rooms = [room for floor in layout for room in floor]
    counts = room_imports(rooms)
    floor_of = {room: i for i, floor in enumerate(layout) for room in floor}

    fig, (stack, matrix) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1, 1.35]})
    width, height, gap = 3.0, 0.72, 0.28
    for row, floor in enumerate(layout):
        y = -row * (height + gap)
        for col, room in enumerate(floor):
            x = (col - (len(floor) - 1) / 2) * (width / len(floor) + 0.15) * (1 if len(floor) == 1 else 1.05)
            w = width if len(floor) == 1 else width / len(floor)
            stack.add_patch(
                FancyBboxPatch(
                    (x - w / 2, y - height / 2),
                    w,
                    height,
                    boxstyle="round,pad=0.02,rounding_size=0.1",
                    facecolor="#f3f3f3" if room == "core" else "#eef3fb",
                    edgecolor="#3a5a8c",
                    lw=1.2,
                )
            )
            stack.text(x, y + 0.13, room, ha="center", va="center", fontsize=11, weight="bold")
            stack.text(
                x,
                y - 0.16,
                JOBS.get(room, ""),
                ha="center",
                va="center",
                fontsize=7.5 if len(floor) == 1 else 6.5,
                color="#444",
            )
        if row < len(layout) - 1:
            stack.annotate(
                "",
                xy=(0, y - height / 2 - gap + 0.02),
                xytext=(0, y - height / 2 - 0.02),
                arrowprops={"arrowstyle": "-|>", "color": "#5d6d7e", "lw": 1.0},
            )
    stack.set_xlim(-width / 2 - 0.3, width / 2 + 0.3)
    stack.set_ylim(-(len(layout) - 1) * (height + gap) - height, height)
    stack.set_aspect("equal")
    stack.axis("off")
    stack.set_title("floors: a room imports only rooms below it", fontsize=10)

    n = len(rooms)
    for i, source in enumerate(rooms):
        for j, target in enumerate(rooms):
            value = counts.get((source, target), 0)
            upward = floor_of[target] < floor_of[source] or (floor_of[target] == floor_of[source] and i != j)
            colour = "#ffffff" if not value else ("#e74c3c" if upward else "#aec7e8")
            if i == j:
                colour = "#dddddd"
            matrix.add_patch(plt.Rectangle((j, n - 1 - i), 1, 1, facecolor=colour, edgecolor="#cccccc", lw=0.6))
            if value:
                matrix.text(j + 0.5, n - 0.5 - i, str(value), ha="center", va="center", fontsize=8)
    matrix.set_xlim(0, n)
    matrix.set_ylim(0, n)
    matrix.set_xticks([j + 0.5 for j in range(n)], rooms, rotation=60, ha="right", fontsize=8)
    matrix.set_yticks([n - 0.5 - i for i in range(n)], rooms, fontsize=8)
    matrix.tick_params(length=0)
    matrix.set_aspect("equal")
    matrix.set_title("row imports column (module pairs): every count right of the diagonal", fontsize=10)
    for spine in matrix.spines.values():
        spine.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "architecture.png"
    print(draw(target))
