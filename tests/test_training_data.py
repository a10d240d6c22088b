"""Tests for training.data: parsing each row kind and reporting every bad row with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import DataError, MediaSeg, OutputSeg, Sample, TextSeg, load_samples

MODS = ("image", "video", "audio")
GENS = ("image", "video", "audio")
PNG = b"\x89PNG\r\n\x1a\n not really a png"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    for name in ("cat.png", "dog.png", "red.png"):
        (tmp_path / "imgs" / name).write_bytes(PNG)
    (tmp_path / "clip.wav").write_bytes(b"RIFF....WAVE")
    return tmp_path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def load(path: Path, **kw) -> list[Sample]:
    return load_samples(path, modalities=kw.pop("modalities", MODS), generators=kw.pop("generators", GENS), **kw)


def errors_of(path: Path, **kw) -> list[str]:
    with pytest.raises(DataError) as info:
        load(path, **kw)
    return info.value.errors


CONV = {
    "id": "cat-1",
    "image": ["imgs/cat.png", "imgs/dog.png"],
    "audio": "clip.wav",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"},
        {"from": "gpt", "value": "It is a cat. At night: <image>\nDone."},
        {"from": "user", "value": "Compare with <image> and <audio>"},
        {"from": "assistant", "value": "<image><audio>"},
    ],
    "output_captions": {"image": ["a cat at night", "a dog at dawn"], "audio": ["a purr"]},
}


# ------------------------------------------------------------------------------------------ good rows


def test_conversation_row(data_dir: Path):
    (s,) = load(write_jsonl(data_dir / "d.jsonl", [CONV]))
    assert s.id == "cat-1" and s.line == 1
    assert s.media == {
        "image": [data_dir / "imgs/cat.png", data_dir / "imgs/dog.png"],
        "audio": [data_dir / "clip.wav"],
    }
    assert s.turns == [
        ("user", [MediaSeg("image", 0), TextSeg("What is this?")]),
        ("assistant", [TextSeg("It is a cat. At night: "), OutputSeg("image", "a cat at night"), TextSeg("Done.")]),
        ("user", [TextSeg("Compare with "), MediaSeg("image", 1), TextSeg(" and "), MediaSeg("audio", 0)]),
        ("assistant", [OutputSeg("image", "a dog at dawn"), OutputSeg("audio", "a purr")]),
    ]
    assert [o.caption for o in s.outputs()] == ["a cat at night", "a dog at dawn", "a purr"]


def test_ordinary_angle_brackets_are_text(data_dir: Path):
    text = "is a < b and b > c? x<=y </b>"
    row = {"conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "yes"}]}
    (s,) = load(write_jsonl(data_dir / "d.jsonl", [row]))
    assert s.turns[0] == ("user", [TextSeg("is a < b and b > c? x<=y </b>")])
    assert s.id == "line-1"


def test_custom_modality_name(data_dir: Path):
    (data_dir / "scan.npy").write_bytes(b"x")
    row = {"thermal": "scan.npy", "caption": "a warm hand"}
    (s,) = load(write_jsonl(data_dir / "d.jsonl", [row]), modalities=("image", "thermal"), generators=())
    assert s.media == {"thermal": [data_dir / "scan.npy"]}
    assert s.turns == [("user", [MediaSeg("thermal", 0)]), ("assistant", [TextSeg("a warm hand")])]


def test_pt_pair_encoder_side(data_dir: Path):
    (s,) = load(write_jsonl(data_dir / "pt.jsonl", [{"image": "imgs/red.png", "caption": "a red square"}]))
    assert s.media == {"image": [data_dir / "imgs/red.png"]}
    assert s.turns == [("user", [MediaSeg("image", 0)]), ("assistant", [TextSeg("a red square")])]


def test_pt_pair_decoder_side(data_dir: Path):
    (s,) = load(write_jsonl(data_dir / "pt.jsonl", [{"caption": "a red square", "generate": "image"}]))
    assert s.media == {}
    assert s.turns == [("user", [TextSeg("a red square")]), ("assistant", [OutputSeg("image", "a red square")])]


def test_json_list_and_jsonl_agree(data_dir: Path):
    rows = [CONV, {"image": "imgs/red.png", "caption": "a red square"}, {"caption": "rain", "generate": "audio"}]
    (data_dir / "d.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    from_json = load(data_dir / "d.json")
    from_jsonl = load(write_jsonl(data_dir / "d.jsonl", rows))
    assert [s.line for s in from_json] == [1, 2, 3]
    assert [(s.media, s.turns) for s in from_json] == [(s.media, s.turns) for s in from_jsonl]


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(data_dir: Path):
    path = data_dir / "d.jsonl"
    path.write_text(
        "\n"
        + json.dumps({"caption": "rain", "generate": "audio"})
        + "\n\n"
        + json.dumps({"caption": "sun", "generate": "image"})
        + "\n"
    )
    assert [s.line for s in load(path)] == [2, 4]


def test_relative_paths_resolve_against_data_folder_and_root(data_dir: Path, tmp_path_factory):
    sub = data_dir / "meta"
    sub.mkdir()
    path = write_jsonl(sub / "d.jsonl", [{"image": "../imgs/cat.png", "caption": "a cat"}])
    (s,) = load(path)
    assert s.media["image"] == [sub / "../imgs/cat.png"] and s.media["image"][0].is_file()

    other = write_jsonl(tmp_path_factory.mktemp("elsewhere") / "d.jsonl", [{"image": "imgs/cat.png", "caption": "c"}])
    (s,) = load(other, root=data_dir)
    assert s.media["image"] == [data_dir / "imgs/cat.png"]
    # without root the same relative path resolves next to the data file, where it does not exist
    assert "image file not found" in errors_of(other)[0]


def test_absolute_path_and_check_files_off(data_dir: Path):
    row = {
        "image": str(data_dir / "imgs/cat.png"),
        "video": "missing.mp4",
        "conversations": [{"from": "human", "value": "<image><video>"}, {"from": "gpt", "value": "ok"}],
    }
    (s,) = load(write_jsonl(data_dir / "d.jsonl", [row]), check_files=False)
    assert s.media == {"image": [data_dir / "imgs/cat.png"], "video": [data_dir / "missing.mp4"]}


# ------------------------------------------------------------------------------------------- bad rows


def _conv(*turns, **extra):
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


GOOD = _conv(("human", "hi"), ("gpt", "hello"))

BAD_CASES = {
    "invalid JSON": ('{"conversations": [', "invalid JSON"),
    "not an object": ([1, 2], "must be a JSON object"),
    "missing conversations": ({"id": "x"}, "missing or empty 'conversations'"),
    "empty conversations": ({"conversations": []}, "missing or empty 'conversations'"),
    "unknown from": (_conv(("human", "hi"), ("robot", "beep")), "unknown 'from' 'robot'"),
    "missing file": ({"image": "imgs/nope.png", "caption": "c"}, "image file not found"),
    "unknown placeholder": (_conv(("human", "what is <smell>?"), ("gpt", "roses")), "unknown placeholder <smell>"),
    "more placeholders than media": (
        _conv(("human", "<image> and <image>"), ("gpt", "two"), image="imgs/cat.png"),
        "more <image> placeholders than image items",
    ),
    "fewer placeholders than media": (
        _conv(("human", "<image>"), ("gpt", "one"), image=["imgs/cat.png", "imgs/dog.png"]),
        "fewer <image> placeholders (1) than image items (2)",
    ),
    "placeholder with no media at all": (_conv(("human", "<video>"), ("gpt", "?")), "more <video> placeholders"),
    "input placeholder in gpt turn": (
        _conv(("human", "hi"), ("gpt", "listen <audio>"), output_captions={"audio": ["x"]}),
        "input placeholder <audio> in an assistant turn",
    ),
    "output placeholder without caption": (
        _conv(("human", "draw"), ("gpt", "<image>")),
        "output <image> #1 has no caption",
    ),
    "second output without caption": (
        _conv(("human", "draw"), ("gpt", "<image> <image>"), output_captions={"image": ["one"]}),
        "output <image> #2 has no caption",
    ),
    "ends with user turn": (_conv(("human", "hi"), ("gpt", "hello"), ("human", "bye")), "must end with an assistant"),
    "caption row without modality": ({"caption": "lonely"}, "exactly one modality key"),
    "unknown generator": ({"caption": "c", "generate": "smell"}, "'generate' names no generator"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_each_bad_row_is_reported_with_its_line(data_dir: Path, case: str):
    bad, expected = BAD_CASES[case]
    path = write_jsonl(data_dir / "d.jsonl", [GOOD, GOOD, bad, GOOD])
    errors = errors_of(path, generators=("image",) if case == "input placeholder in gpt turn" else GENS)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:3: "), errors
    assert expected in errors[0], errors


def test_all_bad_rows_reported_in_one_error(data_dir: Path):
    rows = [
        GOOD,  # 1
        "not json at all",  # 2
        {"conversations": []},  # 3
        GOOD,  # 4
        _conv(("human", "<smell>"), ("gpt", "x")),  # 5
        {"image": "imgs/missing.png", "caption": "c"},  # 6
        _conv(("human", "hi")),  # 7
    ]
    path = write_jsonl(data_dir / "d.jsonl", rows)
    with pytest.raises(DataError) as info:
        load(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert [e.split(": ", 1)[0] for e in err.errors] == [f"{path}:{n}" for n in (2, 3, 5, 6, 7)]
    for e in err.errors:
        assert e in str(err)


def test_json_list_errors_use_row_index(data_dir: Path):
    path = data_dir / "d.json"
    path.write_text(json.dumps([GOOD, "text", GOOD, {"caption": "c", "generate": "smell"}], indent=2))
    errors = errors_of(path)
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:2", f"{path}:4"]


def test_invalid_json_list_reports_line(data_dir: Path):
    path = data_dir / "d.json"
    path.write_text('[\n  {"conversations": []},\n  {oops}\n]\n')
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:3: invalid JSON")


def test_empty_file_is_an_error(data_dir: Path):
    path = data_dir / "d.jsonl"
    path.write_text("\n\n")
    assert "holds no rows" in errors_of(path)[0]


def test_output_targets_from_output_media_and_pair_target(data_dir: Path):
    path = write_jsonl(
        data_dir / "t.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": "Draw a cat and a dog."},
                    {"from": "gpt", "value": "<image> and <image>"},
                ],
                "output_captions": {"image": ["a cat", "a dog"]},
                "output_media": {"image": ["imgs/cat.png"]},
            },
            {"caption": "a red square", "generate": "image", "target": "imgs/red.png"},
        ],
    )
    first, second = load(path)
    assert first.outputs() == [OutputSeg("image", "a cat", data_dir / "imgs/cat.png"), OutputSeg("image", "a dog")]
    assert second.outputs() == [OutputSeg("image", "a red square", data_dir / "imgs/red.png")]


def test_bad_output_targets_are_reported(data_dir: Path):
    path = write_jsonl(
        data_dir / "t.jsonl",
        [
            {"caption": "a red square", "generate": "image", "target": "imgs/missing.png"},
            {
                "conversations": [{"from": "human", "value": "Draw."}, {"from": "gpt", "value": "<image>"}],
                "output_captions": {"image": ["a cat"]},
                "output_media": {"image": ["imgs/cat.png", "imgs/dog.png"]},
            },
        ],
    )
    errors = errors_of(path)
    assert any(e.startswith(f"{path}:1: output_media['image'] file not found") for e in errors), errors
    assert any(e.startswith(f"{path}:2: output_media['image'] has 2 files for 1 output captions") for e in errors)
