"""Make a recipe run's weights the packaged default system: copy ``OUT/weights`` into ``tinyworld/weights`` (the
``@tinyworld/<name>`` components), within the size limit and in the file kinds the package may hold
(``mmgraph train world --ship``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save

from core.hub import PACKAGED_WORLD_WEIGHTS as PACKAGED_WEIGHTS

#: what the package may hold of a run's weights: the limit of the tinyworld issue, and the file kinds it may contain
SHIP_LIMIT_BYTES = 40 * 1000 * 1000  # 40 MB
SHIP_SUFFIXES = {".safetensors", ".json", ".txt", ".model", ".yaml", ".png", ".jsonl"}


#: files shipped with their floating-point tensors stored as float16: the trained projectors, which the system loads
#: with ``load_state_dict`` into its float32 parameters (the pipelines' and models' own files stay as trained)
SHIP_HALF = ("projectors/trainable.safetensors",)


def _half_precision(src: Path) -> bytes:
    """``src`` (safetensors) with every floating tensor as float16; integer tensors and metadata kept."""
    with safe_open(str(src), framework="pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    return save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, metadata=metadata)


def ship(weights: str | Path, dest: str | Path = PACKAGED_WEIGHTS, *, limit: int = SHIP_LIMIT_BYTES) -> dict:
    """Copy a run's ``OUT/weights`` into the package (``tinyworld/weights``, the ``@tinyworld/`` components).

    Training checkpoints (optimizer state, only needed to resume) stay behind; the files of :data:`SHIP_HALF`
    are stored in float16. Refuses anything that is not safetensors, JSON, text, a SentencePiece model or a plot
    -- no pickles -- and a total over ``limit`` bytes, before touching ``dest``. Returns ``{"files", "bytes",
    "per_component": {name: bytes}}``."""
    weights, dest = Path(weights), Path(dest)
    files = [f for f in sorted(weights.rglob("*")) if f.is_file() and "checkpoint" not in f.relative_to(weights).parts]
    refused = [str(f.relative_to(weights)) for f in files if f.suffix not in SHIP_SUFFIXES]
    if refused:
        raise ValueError(f"refusing to ship files that are not safetensors / json / text: {refused[:5]}")
    contents = {f: _half_precision(f) if f.relative_to(weights).as_posix() in SHIP_HALF else None for f in files}
    per_component: dict[str, int] = {}
    for f, data in contents.items():
        top = f.relative_to(weights).parts[0]
        per_component[top] = per_component.get(top, 0) + (len(data) if data is not None else f.stat().st_size)
    total = sum(per_component.values())
    if total > limit:
        raise ValueError(
            f"{total / 1e6:.1f} MB of weights is over the {limit / 1e6:.0f} MB limit: "
            + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(per_component.items()))
        )
    if dest.exists():
        shutil.rmtree(dest)
    for f, data in contents.items():
        target = dest / f.relative_to(weights)
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            shutil.copyfile(f, target)
        else:
            target.write_bytes(data)
    return {"files": len(files), "bytes": total, "per_component": per_component}
