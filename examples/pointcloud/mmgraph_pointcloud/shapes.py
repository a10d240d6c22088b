"""Synthetic point clouds: points sampled on the surface of a cube, sphere, cone, cylinder, pyramid or torus.

Each cloud is a randomly rotated, slightly stretched and shifted solid with jittered points, so the encoder has to
recognise the shape, not a pose. ``sample_cloud(shape, rng)`` returns ``(N, 3)`` float32.
"""

from __future__ import annotations

import numpy as np

#: the shapes the worked example talks about (PT / IT captions, the held-out score)
SHAPES = ("cube", "sphere", "cone")
#: every shape the encoder is pre-trained to tell apart (a broader task than the example's three)
ALL_SHAPES = ("cube", "sphere", "cone", "cylinder", "pyramid", "torus")


def _sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _cube(n: int, rng: np.random.Generator) -> np.ndarray:
    p = rng.uniform(-1, 1, size=(n, 3))
    axis = rng.integers(0, 3, size=n)
    p[np.arange(n), axis] = rng.choice([-1.0, 1.0], size=n)  # push one coordinate onto a face
    return p


def _disc(n: int, rng: np.random.Generator, radius: float = 1.0) -> np.ndarray:
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cone(n: int, rng: np.random.Generator) -> np.ndarray:
    # radius 1 at z = -1, apex at z = 1; side area pi*r*sqrt(r^2+h^2) = pi*sqrt(5), base area pi
    side = rng.uniform(0, 1, n) < np.sqrt(5) / (np.sqrt(5) + 1)
    u = np.sqrt(rng.uniform(0, 1, n))  # area-uniform along the side: radius grows linearly from the apex
    t = rng.uniform(0, 2 * np.pi, n)
    p = np.stack([u * np.cos(t), u * np.sin(t), 1 - 2 * u], axis=1)
    base = _disc(n, rng)
    p[~side] = np.concatenate([base, -np.ones((n, 1))], axis=1)[~side]
    return p


def _cylinder(n: int, rng: np.random.Generator) -> np.ndarray:
    side = rng.uniform(0, 1, n) < 2 / 3  # side 2*pi*r*h = 4*pi, caps 2*pi
    t = rng.uniform(0, 2 * np.pi, n)
    p = np.stack([np.cos(t), np.sin(t), rng.uniform(-1, 1, n)], axis=1)
    caps = np.concatenate([_disc(n, rng), rng.choice([-1.0, 1.0], size=(n, 1))], axis=1)
    p[~side] = caps[~side]
    return p


def _pyramid(n: int, rng: np.random.Generator) -> np.ndarray:
    # square base [-1, 1]^2 at z = -1, apex (0, 0, 1); four triangular sides of equal area, base area 4
    side_area = 0.5 * 2 * np.sqrt(1 + 4)
    on_base = rng.uniform(0, 1, n) < 4 / (4 + 4 * side_area)
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    corners = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]], dtype=np.float64)
    k = rng.integers(0, 4, n)
    c0, c1, apex = corners[k], corners[(k + 1) % 4], np.array([0.0, 0.0, 1.0])
    p = c0 + a[:, None] * (c1 - c0) + b[:, None] * (apex - c0)
    p[on_base] = np.concatenate([rng.uniform(-1, 1, (n, 2)), -np.ones((n, 1))], axis=1)[on_base]
    return p


def _torus(n: int, rng: np.random.Generator, big: float = 1.0, small: float = 0.35) -> np.ndarray:
    out = np.empty((0, 3))
    while len(out) < n:  # rejection sampling makes the points area-uniform
        u, v = rng.uniform(0, 2 * np.pi, (2, 2 * n))
        keep = rng.uniform(0, 1, 2 * n) < (big + small * np.cos(v)) / (big + small)
        u, v = u[keep], v[keep]
        ring = big + small * np.cos(v)
        out = np.concatenate([out, np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], axis=1)])
    return out[:n]


_SAMPLERS = {
    "cube": _cube,
    "sphere": _sphere,
    "cone": _cone,
    "cylinder": _cylinder,
    "pyramid": _pyramid,
    "torus": _torus,
}


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def sample_cloud(shape: str, rng: np.random.Generator, points: int = 1024, jitter: float = 0.01) -> np.ndarray:
    """Points on a random pose of ``shape``: ``(points, 3)`` float32."""
    if shape not in _SAMPLERS:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(_SAMPLERS)}")
    p = _SAMPLERS[shape](points, rng)
    p = p * rng.uniform(0.8, 1.2, size=3)  # a slight stretch per axis
    p = p @ _rotation(rng).T + rng.uniform(-0.5, 0.5, size=3)
    p = p + rng.normal(scale=jitter, size=p.shape)
    return p.astype(np.float32)
