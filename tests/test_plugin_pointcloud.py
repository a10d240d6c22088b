"""The point-cloud plugin (examples/pointcloud): a new input modality from outside the tree, end to end.

The package is pip-installed into a scratch folder and a fresh interpreter with that folder on its path finds
its decoder, encoder and projector through the entry points alone. There it runs the example's recipe --
pre-train the frozen point encoder, write PT / IT data, train the ``set_pool`` projector with mmgraph's own
Trainer, and ask an Assistant about held-out clouds. The unit tests below import the package from the source
folder for the decoder's limits and the components' shapes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import MediaLimits, ModalityConfig, ProjectorConfig
from core.errors import InvalidMediaError, MediaTooLargeError, MediaTooSmallError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pointcloud"
sys.path.insert(0, str(EXAMPLE))

from mmgraph_pointcloud.decoder import decode_point_cloud, encode_npy, encode_ply  # noqa: E402
from mmgraph_pointcloud.encoder import PointEncoderConfig, PointEncoderModel, PointPatchEncoder  # noqa: E402
from mmgraph_pointcloud.projector import SetPoolProjector  # noqa: E402
from mmgraph_pointcloud.shapes import ALL_SHAPES, sample_cloud  # noqa: E402

LIMITS = MediaLimits()


def cloud(n: int = 300, shape: str = "cone", seed: int = 0) -> np.ndarray:
    return sample_cloud(shape, np.random.default_rng(seed), n)


# -- the decoder ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [encode_npy, lambda p: encode_ply(p), lambda p: encode_ply(p, binary=False)],
    ids=["npy", "binary-ply", "ascii-ply"],
)
def test_decoder_round_trips(encode):
    points = cloud()
    decoded = decode_point_cloud(encode(points), LIMITS)
    assert decoded.dtype == np.float32 and decoded.shape == (300, 3)
    np.testing.assert_allclose(decoded, points, atol=1e-4)


def test_decoder_reads_extra_columns_and_fortran_order():
    points = np.asfortranarray(np.concatenate([cloud(), np.ones((300, 3))], axis=1))  # xyz + normals
    stream = io.BytesIO()
    np.save(stream, points)
    np.testing.assert_allclose(decode_point_cloud(stream.getvalue(), LIMITS), cloud(), atol=1e-6)
    header = (
        b"ply\nformat ascii 1.0\nelement vertex 20\nproperty float nx\nproperty float z\nproperty float y\n"
        b"property float x\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
    )
    rows = "".join(f"9 {z} {y} {x}\n" for x, y, z in cloud(20)).encode()
    np.testing.assert_allclose(decode_point_cloud(header + rows, LIMITS), cloud(20), atol=1e-5)


def test_decoder_refuses_object_arrays_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    stream = io.BytesIO()
    np.save(stream, np.array([[Boom()] * 3] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(InvalidMediaError, match="object arrays are refused"):
        decode_point_cloud(stream.getvalue(), LIMITS)
    assert not marker.exists()


def test_decoder_limits_are_checked_before_the_body():
    huge = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 900000000\nproperty float x\nproperty float y\n"
        b"property float z\nend_header\n" + b"\0" * 24
    )
    with pytest.raises(MediaTooLargeError, match="900000000 points, over the limit of 200000"):
        decode_point_cloud(huge, LIMITS)
    with pytest.raises(MediaTooLargeError, match="over the limit of 1000"):
        decode_point_cloud(encode_npy(cloud(2000)), LIMITS, max_points=1000)
    with pytest.raises(MediaTooLargeError, match="bytes, over the limit"):
        decode_point_cloud(encode_npy(cloud(2000)), MediaLimits(max_bytes=1000))
    with pytest.raises(MediaTooSmallError, match="5 points, under the minimum of 16"):
        decode_point_cloud(encode_npy(cloud(5)), LIMITS)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"GIF89a garbage", "not a .npy or .ply file"),
        (encode_npy(cloud())[:-40], "truncated"),
        (encode_ply(cloud())[:-40], "truncated"),
        (encode_npy(np.full((30, 3), np.nan)), "finite"),
        (encode_npy(np.zeros((30, 3))), "same place"),
        (encode_npy(np.zeros((30, 2))), r"shape \(30, 2\)"),
        (b"ply\nformat ascii 1.0\nelement vertex 20\nproperty float x\nend_header\n", "x, y and z are needed"),
        (
            b"ply\nformat ascii 1.0\nelement vertex 20\nproperty float x\nproperty float y\nproperty float z\n",
            "end_header",
        ),
    ],
)
def test_decoder_refuses_bad_input(data, message):
    with pytest.raises(InvalidMediaError, match=message):
        decode_point_cloud(data, LIMITS)


# -- the encoder and the projector ------------------------------------------------------------------------------------


def test_encoder_round_trips_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    model = PointEncoderModel(PointEncoderConfig(num_points=128, num_patches=8, patch_size=8, hidden_size=32))
    model.save_pretrained(tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").exists()
    encoder = PointPatchEncoder.from_config(ModalityConfig(encoder="point_patches", model=str(tmp_path / "enc")))
    assert not any(p.requires_grad for p in encoder.parameters())
    items = [cloud(500, s, i) for i, s in enumerate(ALL_SHAPES)]
    features = encoder.encode(items)
    assert features.shape == (6, 1, 1 + 8, 32) == (6, 1, encoder.tokens_per_group, encoder.hidden_size)
    with torch.no_grad():
        expected = model.eval()(points=encoder.preprocess(items)["points"]).last_hidden_state
    torch.testing.assert_close(features[:, 0], expected)
    torch.testing.assert_close(encoder.encode(items[:1]), features[:1])  # batch-independent, seeded resampling


def test_set_pool_projector_ignores_token_order():
    torch.manual_seed(0)
    projector = SetPoolProjector(32, 48, ProjectorConfig(kind="set_pool", num_queries=4, depth=2, width=40))
    x = torch.randn(3, 9, 32)
    out = projector(x)
    assert out.shape == (3, 4, 48) == (3, projector.num_output_tokens(9), 48)
    torch.testing.assert_close(projector(x[:, torch.randperm(9)]), out)
    with pytest.raises(ValueError, match=r"expects features of shape \(B, T, 32\)"):
        projector(torch.randn(3, 9, 31))


# -- installed, found through entry points, trained, asked ------------------------------------------------------------

CHILD = r"""
import json, sys
from importlib.metadata import entry_points
from pathlib import Path

found = {g: sorted(ep.name for ep in entry_points(group=g))
         for g in ("mmgraph.decoders", "mmgraph.modalities", "mmgraph.projectors")}
from modalities import ENCODERS, PROJECTORS
from modalities.media import DECODERS
resolved = {kind: reg.get(kind).__module__ for kind, reg in
            (("point_cloud", DECODERS), ("point_patches", ENCODERS), ("set_pool", PROJECTORS))}
import mmgraph_pointcloud
from mmgraph_pointcloud.recipe import run
result = run(sys.argv[1], n_eval=30, progress=False)  # the example's defaults: PT, then IT with LoRA
print(json.dumps({"found": found, "resolved": resolved, "package": mmgraph_pointcloud.__file__, **result}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install`` of (a copy of) the example folder into a scratch target, offline, without build isolation.
    The copy keeps the build's egg-info out of the source folder, which this process has on its path."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "pointcloud"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        cwd=source,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert list(target.glob("mmgraph_pointcloud-*.dist-info/entry_points.txt"))
    return target


@pytest.mark.integration  # pip-installs the example plugin and trains it
def test_installed_plugin_trains_and_answers_about_held_out_clouds(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the components came from the installed distribution, through its entry points
    assert result["found"] == {
        "mmgraph.decoders": ["point_cloud"],
        "mmgraph.modalities": ["point_patches"],
        "mmgraph.projectors": ["set_pool"],
    }
    assert result["resolved"] == {
        "point_cloud": "mmgraph_pointcloud.decoder",
        "point_patches": "mmgraph_pointcloud.encoder",
        "set_pool": "mmgraph_pointcloud.projector",
    }
    assert Path(result["package"]).is_relative_to(installed)
    # the frozen encoder learnt its pre-training task; PT and IT lowered the LM loss
    assert result["encoder"]["accuracy"] > 0.6 and result["encoder"]["loss_last"] < result["encoder"]["loss_first"]
    for stage in ("pt", "it"):
        assert result[stage]["lm_loss_last"] < 0.5 * result[stage]["lm_loss_first"]
    # held-out clouds of fresh poses: chance is 1/3
    answers = result["held_out"]["answers"]
    assert len(answers) == 30 and all(a["reply"] for a in answers)
    assert result["held_out"]["accuracy"] >= 0.7, answers
