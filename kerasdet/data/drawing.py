"""NumPy rasterisation for the synthetic shapes dataset (no PIL, no OpenCV).

Every shape is rasterised with hard edges by testing pixel *centres* `(row + 0.5, col + 0.5)`
against the shape, inside an axis-aligned window `[y0, x0, y0 + h, x0 + w]` (integer pixel
edges). The returned mask is the exact set of pixels the shape paints, so its tight box is
the shape's ground-truth box.

Backgrounds are float32 `[H, W, 3]` images in 0–255 built from gradients, stripes,
checkerboards and smooth value noise.
"""

from __future__ import annotations

import numpy as np

SHAPE_KINDS = ("circle", "square", "triangle", "ellipse", "rectangle")


def _pixel_centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an `h x w` window, relative to its top-left edge."""
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def ellipse_mask(h: int, w: int) -> np.ndarray:
    """Filled axis-aligned ellipse inscribed in an `h x w` window, bool `[h, w]`."""
    ys, xs = _pixel_centres(h, w)
    ry, rx = h / 2.0, w / 2.0
    return ((ys - ry) / ry) ** 2 + ((xs - rx) / rx) ** 2 <= 1.0


def triangle_mask(h: int, w: int, vertices: np.ndarray) -> np.ndarray:
    """Filled triangle, bool `[h, w]`.

    Args:
        h, w: window size in pixels.
        vertices: float `[3, 2]` as `(y, x)` in window coordinates (pixel edges, so
            `(0, 0)` is the window's top-left corner and `(h, w)` its bottom-right one).
    """
    ys, xs = _pixel_centres(h, w)
    v = np.asarray(vertices, np.float32)

    def edge(a, b):
        return (b[1] - a[1]) * (ys - a[0]) - (b[0] - a[0]) * (xs - a[1])

    e0, e1, e2 = edge(v[0], v[1]), edge(v[1], v[2]), edge(v[2], v[0])
    return ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))


def random_triangle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random triangle vertices `[3, 2]` `(y, x)` spanning the whole `h x w` window.

    One vertex sits on a corner, one on the opposite vertical edge, one on the opposite
    horizontal edge, so the vertices' box is the window; slivers (area below 30 % of the
    window) are rejected.
    """
    while True:
        a, b = rng.uniform(0.0, 1.0, size=2)
        if a * b <= 0.4:  # triangle area = (1 - a*b) / 2 of the unit box
            break
    unit = np.array([[0.0, 0.0], [a, 1.0], [1.0, b]], np.float32)  # (y, x) in the unit box
    if rng.random() < 0.5:
        unit = unit[:, ::-1].copy()  # transpose: the corner still at (0, 0)
    if rng.random() < 0.5:
        unit[:, 0] = 1.0 - unit[:, 0]
    if rng.random() < 0.5:
        unit[:, 1] = 1.0 - unit[:, 1]
    return unit * np.array([h, w], np.float32)


def shape_mask(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """Mask bool `[h, w]` of one shape of `kind` (one of `SHAPE_KINDS`) filling the window."""
    if kind in ("circle", "ellipse"):
        return ellipse_mask(h, w)
    if kind in ("square", "rectangle"):
        return np.ones((h, w), bool)
    if kind == "triangle":
        return triangle_mask(h, w, random_triangle(rng, h, w))
    raise ValueError(f"`kind` must be one of {SHAPE_KINDS}, got {kind!r}")


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box `(y1, x1, y2, x2)` in pixel edges of a bool mask (`y2`, `x2` exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour float32 `[3]` in 0–255 (fairly saturated, from random HSV)."""
    hue = rng.uniform(0.0, 6.0)
    sat = rng.uniform(0.45, 1.0)
    val = rng.uniform(0.35, 1.0)
    c = val * sat
    x = c * (1.0 - abs(hue % 2.0 - 1.0))
    sector = int(hue) % 6
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return ((np.array(rgb, np.float32) + (val - c)) * 255.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled value noise in [-1, 1], float32 `[H, W]`."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    gy = np.linspace(0.0, cells, height, dtype=np.float32)
    gx = np.linspace(0.0, cells, width, dtype=np.float32)
    y0 = np.minimum(gy.astype(np.int32), cells - 1)
    x0 = np.minimum(gx.astype(np.int32), cells - 1)
    fy = (gy - y0)[:, None]
    fx = (gx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random background float32 `[H, W, 3]` in 0–255: a gradient, stripes or a checkerboard
    between two colours, blended with smooth value noise. (A writable strided view of a
    channel-first buffer.)"""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    c1 = rng.uniform(0, 255, size=3).astype(np.float32)
    c2 = rng.uniform(0, 255, size=3).astype(np.float32)
    angle = rng.uniform(0.0, np.pi)
    proj = ys * np.float32(np.sin(angle)) + xs * np.float32(np.cos(angle))
    kind = rng.integers(0, 3)
    if kind == 0:  # linear gradient
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    elif kind == 1:  # stripes, soft or hard
        period = rng.uniform(0.04, 0.3)
        phase = rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(proj * np.float32(2 * np.pi / period) + np.float32(phase))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
        t = t * np.float32(rng.uniform(0.2, 1.0))
    else:  # checkerboard
        cells = np.float32(rng.integers(2, 12))
        t = ((np.floor(ys * cells) + np.floor(xs * cells)) % 2).astype(np.float32)
        t = t * np.float32(rng.uniform(0.1, 0.6))
    noise = _smooth_noise(rng, height, width, int(rng.integers(2, 16)))
    amplitude = rng.uniform(10.0, 50.0, size=3).astype(np.float32)
    # Channel-first arithmetic (broadcasting over a trailing axis of 3 is slow), then HWC.
    chw = (
        c1[:, None, None]
        + t[None] * (c2 - c1)[:, None, None]
        + noise[None] * amplitude[:, None, None]
    )
    np.clip(chw, 0.0, 255.0, out=chw)
    return chw.transpose(1, 2, 0)  # a strided view; callers copy when they quantise


def plain_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One flat random colour, float32 `[H, W, 3]` (exact colour masks in tests)."""
    colour = np.round(rng.uniform(0, 255, size=3)).astype(np.float32)
    return np.broadcast_to(colour, (height, width, 3)).copy()
