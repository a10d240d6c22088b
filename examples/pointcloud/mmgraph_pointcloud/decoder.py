"""Safe decoding of point clouds: ``.npy`` or ``.ply`` bytes -> ``np.ndarray`` of shape ``(N, 3)``, float32.

mmgraph calls a decoder as ``decoder(data, limits, **options)`` with the system's
:class:`~core.config.MediaLimits`; it must return the decoded medium or raise one of mmgraph's typed media
errors before anything large is allocated. Here:

* ``.npy`` (NumPy's format, versions 1 and 2): the header is parsed first; object arrays are refused (the file is
  never unpickled), the array must be ``(N, C)`` with ``C >= 3`` real numbers (columns past the third, such as
  colours or normals, are dropped);
* ``.ply``: ``ascii``, ``binary_little_endian`` or ``binary_big_endian``; the ``vertex`` element must come first
  and have scalar ``x``, ``y``, ``z`` properties; other properties and later elements (faces) are ignored.

Limits: ``limits.max_bytes`` for the payload, ``max_points`` (default :data:`MAX_POINTS`) checked against the
declared count before the body is read, ``min_points`` (default :data:`MIN_POINTS`); every coordinate must be
finite and the cloud must not collapse to a single point.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from core.config import MediaLimits
from core.errors import InvalidMediaError, MediaTooLargeError, MediaTooSmallError

MODALITY = "point_cloud"
MAX_POINTS = 200_000
MIN_POINTS = 16
NPY_MAGIC = b"\x93NUMPY"
PLY_MAGIC = b"ply"

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _invalid(message: str) -> InvalidMediaError:
    return InvalidMediaError(f"point cloud: {message}", modality=MODALITY)


def _check_count(count: int, max_points: int, min_points: int) -> None:
    if count > max_points:
        raise MediaTooLargeError(f"point cloud has {count} points, over the limit of {max_points}", modality=MODALITY)
    if count < min_points:
        raise MediaTooSmallError(
            f"point cloud has {count} points, under the minimum of {min_points}", modality=MODALITY
        )


def _read_npy(data: bytes, max_points: int, min_points: int) -> np.ndarray:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _invalid(f".npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")
    except InvalidMediaError:
        raise
    except (ValueError, OSError, SyntaxError) as exc:
        raise _invalid(f"unreadable .npy header ({exc})") from None
    if dtype.hasobject or dtype.kind not in "fiu":
        raise _invalid(f".npy holds {dtype} values; coordinates must be real numbers (object arrays are refused)")
    if len(shape) != 2 or shape[1] < 3:
        raise _invalid(f".npy array has shape {shape}; expected (N, 3) or (N, C) with C >= 3")
    _check_count(shape[0], max_points, min_points)
    body = memoryview(data)[stream.tell() :]
    if len(body) < shape[0] * shape[1] * dtype.itemsize:
        raise _invalid(f".npy body is truncated: {len(body)} bytes for an array of shape {shape}")
    array = np.frombuffer(body, dtype=dtype, count=shape[0] * shape[1])
    array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)  # Fortran order: column-major
    return array[:, :3]


def _ply_header(data: bytes) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """``(format, [(element, count, [(property, type)])], body offset)``."""
    end = data.find(b"end_header")
    if end < 0 or end > 65536:
        raise _invalid(".ply header has no end_header line in its first 64 KiB")
    newline = data.find(b"\n", end)
    body = len(data) if newline < 0 else newline + 1
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise _invalid(".ply header is not ASCII") from None
    fmt, elements = "", []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise _invalid(f".ply header line {line!r} is not understood")
        else:
            raise _invalid(f".ply header line {line!r} is not understood")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _invalid(f".ply format {fmt or '(missing)'!r} is not supported")
    return fmt, elements, body


def _read_ply(data: bytes, max_points: int, min_points: int) -> np.ndarray:
    fmt, elements, offset = _ply_header(data)
    if not elements or elements[0][0] != "vertex":
        raise _invalid(".ply has no vertex element first")
    _, count, properties = elements[0]
    names = [name for name, _ in properties]
    if any(kind == "list" for _, kind in properties):
        raise _invalid(".ply vertex element has list properties")
    if not {"x", "y", "z"} <= set(names):
        raise _invalid(f".ply vertices have properties {names}; x, y and z are needed")
    _check_count(count, max_points, min_points)
    columns = [names.index(axis) for axis in "xyz"]
    if fmt == "ascii":
        rows = data[offset:].split(b"\n", count)[:count]
        if len(rows) < count:
            raise _invalid(f".ply declares {count} vertices but has {len(rows)} lines")
        try:
            values = np.array([row.split()[: len(names)] for row in rows], dtype=np.float64)
        except ValueError:
            raise _invalid(".ply vertex lines are not numbers") from None
        if values.shape != (count, len(names)):
            raise _invalid(f".ply vertex lines do not all have {len(names)} values")
        return values[:, columns]
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + kind) for name, kind in properties])
    if len(data) - offset < count * dtype.itemsize:
        raise _invalid(f".ply body is truncated: {len(data) - offset} bytes for {count} vertices")
    vertices = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return np.stack([vertices[axis].astype(np.float64) for axis in "xyz"], axis=1)


def decode_point_cloud(
    data: bytes, limits: MediaLimits, *, max_points: int = MAX_POINTS, min_points: int = MIN_POINTS, **_: Any
) -> np.ndarray:
    """``.npy`` / ``.ply`` bytes -> ``(N, 3)`` float32 coordinates; raises mmgraph's media errors."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _invalid(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise _invalid("data is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(
            f"point cloud is {len(data)} bytes, over the limit of {limits.max_bytes} bytes", modality=MODALITY
        )
    if data.startswith(NPY_MAGIC):
        points = _read_npy(data, max_points, min_points)
    elif data.startswith(PLY_MAGIC) and data[3:4] in (b"\n", b"\r"):
        points = _read_ply(data, max_points, min_points)
    else:
        raise _invalid("not a .npy or .ply file")
    points = np.asarray(points, dtype=np.float64)
    if not np.isfinite(points).all():
        raise _invalid("coordinates must be finite (found NaN or infinity)")
    if float(np.ptp(points, axis=0).max()) == 0.0:
        raise _invalid("all points are at the same place")
    return points.astype(np.float32)


def encode_npy(points: np.ndarray) -> bytes:
    """``(N, 3)`` -> ``.npy`` bytes (what :func:`decode_point_cloud` reads)."""
    stream = io.BytesIO()
    np.save(stream, np.asarray(points, dtype=np.float32), allow_pickle=False)
    return stream.getvalue()


def encode_ply(points: np.ndarray, *, binary: bool = True) -> bytes:
    """``(N, 3)`` -> ``.ply`` bytes, binary little-endian (default) or ASCII."""
    points = np.asarray(points, dtype=np.float32)
    header = (
        f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    ).encode()
    if binary:
        return header + points.astype("<f4").tobytes()
    return header + "".join(f"{x:.6g} {y:.6g} {z:.6g}\n" for x, y, z in points).encode()
