"""Loading and validating training data for MM PT and MM IT (LLaVA / NExT-GPT style).

This module only reads and checks *descriptions* of training samples; it never decodes media and does not
depend on torch. Every problem in a file is collected and reported at once, as ``{file}:{line}: {problem}``,
so a data set can be fixed in one pass.

File formats
------------
- **JSON**: a list of rows; the "line" of a row is its 1-based index in the list.
- **JSONL**: one row per line; the line of a row is its line number in the file (blank lines are skipped).

A file ending in ``.jsonl`` / ``.ndjson`` is read as JSONL; any other file is read as a JSON list when its first
non-blank character is ``[`` and as JSONL otherwise.

Row kinds
---------
(a) **Conversation** (MM IT, LLaVA layout), e.g.::

    {"id": "cat-1",
     "image": "imgs/cat.png",
     "conversations": [
        {"from": "human", "value": "<image>\\nWhat is this? Draw it at night."},
        {"from": "gpt",   "value": "It is a cat. Here it is at night: <image>"}],
     "output_captions": {"image": ["a cat at night"]}}

   Media keys are modality names (``image``, ``video``, ``audio``, or any configured input modality); a value
   is one path or a list of paths, relative paths resolving against ``root`` (by default the data file's
   folder). ``from`` is ``human``/``user`` or ``gpt``/``assistant``. A placeholder ``<name>``:

   - in a **user** turn consumes the next input item of modality ``name`` (in order of appearance); every
     item must be consumed exactly once;
   - in an **assistant** turn means "the assistant generates this modality here": ``name`` must be a
     generator, and the placeholder takes the next caption of ``output_captions[name]`` -- the text the output
     projector is aligned to (NExT-GPT / GILL style).

   ``output_media`` (optional, ``{generator: [path, ...]}``, in the order of the outputs) names files of the wanted
   outputs, the targets of the optional latent-diffusion loss.

   Text around placeholders is kept in order; one newline right before or after a placeholder is dropped
   (LLaVA writes ``"<image>\\n..."``). The conversation must end with an assistant turn.

(b) **PT pair shorthand** (MM PT), encoder side::

    {"image": "imgs/red.png", "caption": "a red square"}

   is a user turn ``"<image>"`` followed by an assistant turn ``"a red square"`` (exactly one modality key);
   and decoder side::

    {"caption": "a red square", "generate": "image"}

   is a user turn ``"a red square"`` followed by an assistant turn ``"<image>"`` whose output caption is the
   caption itself (``"target": "imgs/red.png"`` adds the wanted output for the latent-diffusion loss).

Parsed rows become :class:`Sample` objects whose turns are lists of segments: :class:`TextSeg`,
:class:`MediaSeg` (an index into ``Sample.media[modality]``) and :class:`OutputSeg` (a generator and its
caption).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import MMGraphError

__all__ = [
    "DataError",
    "MediaSeg",
    "OutputSeg",
    "Sample",
    "Segment",
    "TextSeg",
    "load_samples",
]

USER = "user"
ASSISTANT = "assistant"
ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}

# Anything shaped like ``<word>`` is treated as a placeholder (and must name a modality or a generator).
# Text such as "a < b", "<= 3", "</b>" or "< image >" does not match.
PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9_-]*)>")

JSONL_SUFFIXES = {".jsonl", ".ndjson"}


# --------------------------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class TextSeg:
    """Plain text typed in a turn."""

    text: str


@dataclass(frozen=True)
class MediaSeg:
    """An input item: ``Sample.media[modality][index]``."""

    modality: str
    index: int


@dataclass(frozen=True)
class OutputSeg:
    """A place where the assistant generates ``modality``; ``caption`` is the output projector's target, and
    ``target`` (optional) a file of the wanted output, for the latent-diffusion loss."""

    modality: str
    caption: str
    target: Path | None = None


Segment = TextSeg | MediaSeg | OutputSeg


@dataclass
class Sample:
    """One validated training sample.

    ``turns`` is a list of ``(role, segments)`` with role ``"user"`` or ``"assistant"``; the last turn is always
    an assistant turn. ``line`` is where the row was found (JSONL line or 1-based JSON list index).
    """

    id: str
    line: int
    media: dict[str, list[Path]] = field(default_factory=dict)
    turns: list[tuple[str, list[Segment]]] = field(default_factory=list)

    def outputs(self) -> list[OutputSeg]:
        """Every output segment, in order of appearance."""
        return [seg for _, segs in self.turns for seg in segs if isinstance(seg, OutputSeg)]


class DataError(MMGraphError, ValueError):
    """A data file holds bad rows. ``errors`` lists each problem as ``"{file}:{line}: {what is wrong}"``."""

    def __init__(self, errors: list[str], *, file: str | Path | None = None) -> None:
        self.errors = list(errors)
        where = f" in {file}" if file is not None else ""
        n = len(self.errors)
        head = f"{n} problem{'s' if n != 1 else ''} in training data{where}:"
        super().__init__("\n".join([head, *("  " + e for e in self.errors)]))


# ------------------------------------------------------------------------------------------------ reading


def _read_rows(path: Path, label: str, errors: list[str]) -> list[tuple[int, Any]]:
    """Return ``(line, row)`` pairs; unreadable lines / files are appended to ``errors``."""
    text = path.read_text(encoding="utf-8")
    as_jsonl = path.suffix.lower() in JSONL_SUFFIXES or not text.lstrip().startswith("[")
    if not as_jsonl:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(f"{label}:{exc.lineno}: invalid JSON: {exc.msg}")
            return []
        if not isinstance(data, list):  # pragma: no cover - guarded by the "[" sniff above
            errors.append(f"{label}:1: a JSON data file must hold a list of rows")
            return []
        return list(enumerate(data, start=1))

    rows: list[tuple[int, Any]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((lineno, json.loads(raw)))
        except json.JSONDecodeError as exc:
            errors.append(f"{label}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
    return rows


# ------------------------------------------------------------------------------------------------ parsing


class _RowParser:
    """Validates one row and builds its :class:`Sample`; problems are collected in ``self.problems``."""

    def __init__(
        self,
        row: dict[str, Any],
        line: int,
        *,
        modalities: tuple[str, ...],
        generators: tuple[str, ...],
        root: Path,
        check_files: bool,
    ) -> None:
        self.row = row
        self.line = line
        self.modalities = modalities
        self.generators = generators
        self.root = root
        self.check_files = check_files
        self.problems: list[str] = []
        self.targets: dict[str, list[Path]] = {}

    # -- helpers

    def _paths(self, modality: str, value: Any) -> list[Path]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items):
            self.problems.append(f"'{modality}' must be a path or a list of paths")
            return []
        paths = []
        for raw in items:
            p = Path(raw).expanduser()
            p = p if p.is_absolute() else self.root / p
            if self.check_files and not p.is_file():
                self.problems.append(f"{modality} file not found: {p}")
            paths.append(p)
        return paths

    def _captions(self) -> dict[str, list[str]]:
        raw = self.row.get("output_captions", {})
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.append("'output_captions' must be an object {generator: [caption, ...]}")
            return {}
        out: dict[str, list[str]] = {}
        for name, caps in raw.items():
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(caps, list) or not all(isinstance(c, str) and c.strip() for c in caps):
                self.problems.append(f"output_captions['{name}'] must be a list of non-empty strings")
                continue
            out[name] = caps
        return out

    def _targets(self) -> dict[str, list[Path]]:
        raw = self.row.get("output_media", {})
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.append("'output_media' must be an object {generator: [path, ...]}")
            return {}
        return {name: self._paths(f"output_media['{name}']", value) for name, value in raw.items()}

    def _conversations(self) -> list[Any] | None:
        """The row's turns, expanding the PT pair shorthand into an equivalent conversation."""
        row = self.row
        if "conversations" in row or "caption" not in row:
            conv = row.get("conversations")
            if not isinstance(conv, list) or not conv:
                self.problems.append("missing or empty 'conversations'")
                return None
            return conv

        caption = row["caption"]
        if not isinstance(caption, str) or not caption.strip():
            self.problems.append("'caption' must be a non-empty string")
            return None
        if "generate" in row:
            gen = row["generate"]
            if gen not in self.generators:
                self.problems.append(f"'generate' names no generator: {gen!r} (known: {list(self.generators)})")
                return None
            self.row = {**row, "output_captions": {gen: [caption]}}
            if "target" in row:
                self.row["output_media"] = {gen: row["target"]}
            return [{"from": "human", "value": caption}, {"from": "gpt", "value": f"<{gen}>"}]
        keys = [m for m in self.modalities if m in row]
        if len(keys) != 1:
            self.problems.append(
                "a 'caption' row needs exactly one modality key "
                f"(one of {list(self.modalities)}) or a 'generate' key; found {keys}"
            )
            return None
        return [{"from": "human", "value": f"<{keys[0]}>"}, {"from": "gpt", "value": caption}]

    # -- main

    def parse(self) -> Sample | None:
        conv = self._conversations()
        media = {m: self._paths(m, self.row[m]) for m in self.modalities if m in self.row}
        captions = self._captions()
        targets = self._targets()
        for g, paths in targets.items():
            if len(paths) > len(captions.get(g, [])):
                self.problems.append(
                    f"output_media['{g}'] has {len(paths)} files for "
                    f"{len(captions.get(g, []))} output captions; give one caption per output"
                )
        self.targets = targets
        if conv is None:
            return None

        used_inputs = {m: 0 for m in self.modalities}
        used_outputs = {g: 0 for g in self.generators}
        turns: list[tuple[str, list[Segment]]] = []
        for n, turn in enumerate(conv, start=1):
            if not isinstance(turn, dict):
                self.problems.append(f"turn {n} is not an object")
                continue
            sender = turn.get("from")
            role = ROLES.get(sender) if isinstance(sender, str) else None
            if role is None:
                self.problems.append(f"turn {n}: unknown 'from' {sender!r} (use human/user or gpt/assistant)")
                continue
            value = turn.get("value")
            if not isinstance(value, str):
                self.problems.append(f"turn {n}: 'value' must be a string")
                continue
            turns.append((role, self._segments(n, role, value, media, captions, used_inputs, used_outputs)))

        if turns and len(turns) == len(conv) and turns[-1][0] != ASSISTANT:
            self.problems.append("the conversation must end with an assistant (gpt) turn")

        for m, items in media.items():
            if used_inputs[m] < len(items):
                self.problems.append(f"fewer <{m}> placeholders ({used_inputs[m]}) than {m} items ({len(items)})")
        for g, caps in captions.items():
            if g in used_outputs and used_outputs[g] < len(caps):
                self.problems.append(
                    f"more output_captions['{g}'] ({len(caps)}) than <{g}> outputs ({used_outputs[g]})"
                )

        if self.problems:
            return None
        sample_id = self.row.get("id")
        return Sample(
            id=str(sample_id) if sample_id is not None else f"line-{self.line}",
            line=self.line,
            media=media,
            turns=turns,
        )

    def _segments(
        self,
        n: int,
        role: str,
        value: str,
        media: dict[str, list[Path]],
        captions: dict[str, list[str]],
        used_inputs: dict[str, int],
        used_outputs: dict[str, int],
    ) -> list[Segment]:
        """Split one turn's text into segments, consuming media items and output captions in order."""
        segs: list[Segment] = []
        pos = 0
        for match in PLACEHOLDER.finditer(value):
            name = match.group(1)
            seg = self._placeholder(n, role, name, media, captions, used_inputs, used_outputs)
            if seg is None:
                continue  # not a placeholder we accept: a problem was recorded, keep scanning
            before = value[pos : match.start()]
            if before.endswith("\n"):
                before = before[:-1]
            if before:
                segs.append(TextSeg(before))
            segs.append(seg)
            pos = match.end()
            if value.startswith("\n", pos):
                pos += 1
        if value[pos:]:
            segs.append(TextSeg(value[pos:]))
        return segs

    def _placeholder(
        self,
        n: int,
        role: str,
        name: str,
        media: dict[str, list[Path]],
        captions: dict[str, list[str]],
        used_inputs: dict[str, int],
        used_outputs: dict[str, int],
    ) -> Segment | None:
        if name not in self.modalities and name not in self.generators:
            self.problems.append(f"turn {n}: unknown placeholder <{name}>")
            return None
        if role == USER:
            if name not in self.modalities:
                self.problems.append(f"turn {n}: <{name}> in a user turn, but '{name}' is not an input modality")
                return None
            index = used_inputs[name]
            used_inputs[name] += 1
            if index >= len(media.get(name, [])):
                self.problems.append(
                    f"turn {n}: more <{name}> placeholders than {name} items ({len(media.get(name, []))})"
                )
                return None
            return MediaSeg(name, index)
        # assistant turn: an output
        if name not in self.generators:
            self.problems.append(
                f"turn {n}: input placeholder <{name}> in an assistant turn, but '{name}' is not a generator"
            )
            return None
        k = used_outputs[name]
        used_outputs[name] += 1
        caps = captions.get(name, [])
        if k >= len(caps):
            self.problems.append(f"turn {n}: output <{name}> #{k + 1} has no caption in output_captions['{name}']")
            return None
        targets = self.targets.get(name, [])
        return OutputSeg(name, caps[k], targets[k] if k < len(targets) else None)


# --------------------------------------------------------------------------------------------- public API


def load_samples(
    path: str | Path,
    *,
    modalities: Iterable[str],
    generators: Iterable[str],
    root: Path | None = None,
    check_files: bool = True,
) -> list[Sample]:
    """Read and validate a JSON / JSONL training file.

    ``modalities`` are the input modality names (placeholders in user turns, media keys of a row);
    ``generators`` the output modality names (placeholders in assistant turns). Relative media paths resolve
    against ``root`` (default: the data file's folder); with ``check_files`` every media file must exist.

    Raises :class:`DataError` listing every bad row (``"{file}:{line}: ..."``) if any row is bad, or if the file
    holds no rows at all.
    """
    path = Path(path)
    label = str(path)
    root = Path(root) if root is not None else path.parent
    mods, gens = tuple(dict.fromkeys(modalities)), tuple(dict.fromkeys(generators))

    errors: list[str] = []
    samples: list[Sample] = []
    rows = _read_rows(path, label, errors)
    for line, row in rows:
        if not isinstance(row, dict):
            errors.append(f"{label}:{line}: a row must be a JSON object, got {type(row).__name__}")
            continue
        parser = _RowParser(row, line, modalities=mods, generators=gens, root=root, check_files=check_files)
        sample = parser.parse()
        errors.extend(f"{label}:{line}: {problem}" for problem in parser.problems)
        if sample is not None:
            samples.append(sample)

    if not rows and not errors:
        errors.append(f"{label}:1: the file holds no rows")
    if errors:
        raise DataError(errors, file=label)
    return samples
