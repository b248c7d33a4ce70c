"""Drawing for the ``shapes`` world, vectorised in numpy: each shape is a high-resolution boolean template
with its summed-area table, and a pixel's anti-aliased coverage is the template area under its
footprint, read from four table corners, so one fancy-indexing gather renders a whole batch."""

from __future__ import annotations

from functools import cache

import numpy as np

from searle_core.world.attributes import ATTRIBUTES, BACKGROUNDS, COLOURS, SHAPES, SIZES

# Polygons in normalised, y-up coordinates. Each one is centred on its bounding box so position
# jitter means the same thing for every shape, and fits in [-1, 1]^2 so scale = half-extent.
_STAR_ANGLES = np.deg2rad(90.0 + 36.0 * np.arange(10))
_STAR_RADII = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
_STAR = np.stack([_STAR_RADII * np.cos(_STAR_ANGLES), _STAR_RADII * np.sin(_STAR_ANGLES)], axis=1)
_STAR[:, 1] -= (_STAR[:, 1].max() + _STAR[:, 1].min()) / 2  # centre the bounding box vertically

_TRI = np.array([[0.0, 1.0], [-0.95, -0.65], [0.95, -0.65]])
_TRI[:, 1] -= (_TRI[:, 1].max() + _TRI[:, 1].min()) / 2

_ARM = 0.3  # half-width of a cross arm: thick enough to survive at ~6 px radius
# The top arm's corners, then the same turned clockwise a quarter at a time.
_CROSS_ARM = np.array([[-_ARM, 0.95], [_ARM, 0.95], [_ARM, _ARM]])
_CROSS = np.concatenate([_CROSS_ARM @ np.linalg.matrix_power(np.array([[0, -1], [1, 0]]), k) for k in range(4)])
# Right-pointing arrow: a thick shaft and a wide head, so it is not a triangle or a cross.
_ARROW = np.array(
    [[-0.95, -0.24], [0.05, -0.24], [0.05, -0.75], [0.95, 0.0], [0.05, 0.75], [0.05, 0.24], [-0.95, 0.24]]
)
_SQUARE = np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
#: Shape name -> polygon vertices (y-up), or ``None`` for the circle (drawn analytically).
SHAPE_GEOMETRY = {"circle": None, "square": _SQUARE, "triangle": _TRI, "star": _STAR, "cross": _CROSS, "arrow": _ARROW}

_TEMPLATE_RES = 512  # template pixels across [-_EXTENT, _EXTENT]: ~0.1 px error at 64x64 images
_EXTENT = 1.25  # margin beyond [-1, 1] so clipped lookups land on empty template pixels
_CIRCLE_RADIUS = 0.95
# Half-extent of a shape as a fraction of the image side, before jitter: small shapes span ~40% of the
# image and large ~68%, and the +-10% size jitter keeps the two classes well apart.
_SIZE_FRACTION = {"small": 0.20, "large": 0.34}


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd (crossing-number) point-in-polygon test of points ``(u, v)``; ``poly`` may be non-convex."""
    inside = np.zeros(u.shape, dtype=bool)
    for k in range(len(poly)):
        (x0, y0), (x1, y1) = poly[k], poly[(k + 1) % len(poly)]
        if y0 == y1:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (y0 > v) != (y1 > v)
        x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


@cache
def shape_templates() -> np.ndarray:
    """``(len(SHAPES), R, R)`` high-resolution boolean masks over ``[-1.25, 1.25]^2``, rows top-to-bottom."""
    centres = (np.arange(_TEMPLATE_RES) + 0.5) / _TEMPLATE_RES * 2 * _EXTENT - _EXTENT
    u = np.broadcast_to(centres[None, :], (_TEMPLATE_RES, _TEMPLATE_RES))
    v = np.broadcast_to(-centres[:, None], (_TEMPLATE_RES, _TEMPLATE_RES))  # row 0 is the top
    geometry = [SHAPE_GEOMETRY[name] for name in SHAPES]
    out = np.stack([(u**2 + v**2 <= _CIRCLE_RADIUS**2) if g is None else _inside_polygon(u, v, g) for g in geometry])
    out.setflags(write=False)
    return out


@cache
def _summed_area() -> np.ndarray:
    """``sat[k, r, c]``: filled template pixels above-left of (r, c)."""
    sat = np.zeros((len(SHAPES), _TEMPLATE_RES + 1, _TEMPLATE_RES + 1), dtype=np.int32)
    sat[:, 1:, 1:] = shape_templates().cumsum(axis=1, dtype=np.int32).cumsum(axis=2)
    sat.setflags(write=False)
    return sat


def coverage(shape_idx, cx, cy, radius, image_size: int, antialias: bool = True) -> np.ndarray:
    """``(N, S, S)`` float32 fraction of each pixel (spanning ``[i, i+1)``) covered by its shape, centred at
    ``cx, cy`` with half-extent ``radius`` pixels: exact with ``antialias``, else the template at its centre."""
    s, res = image_size, _TEMPLATE_RES
    scale = res / (2 * _EXTENT)  # template pixels per normalised unit
    k = np.asarray(shape_idx, dtype=np.intp)

    def to_template(pixels: np.ndarray, centre: np.ndarray) -> np.ndarray:
        return ((pixels[None, :] - centre[:, None]) / radius[:, None] + _EXTENT) * scale

    if not antialias:
        centres = np.arange(s, dtype=np.float64) + 0.5
        cols = np.clip(np.floor(to_template(centres, cx)).astype(np.intp), 0, res - 1)
        rows = np.clip(np.floor(to_template(centres, cy)).astype(np.intp), 0, res - 1)
        return shape_templates()[k[:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float32)

    edges = np.arange(s + 1, dtype=np.float64)  # pixel boundaries
    cols = np.rint(to_template(edges, cx)).astype(np.intp)  # y-down image rows match template rows
    rows = np.rint(to_template(edges, cy)).astype(np.intp)
    # Footprint area before clipping: outside the template there is nothing, so clipping the
    # corners keeps the count right while the area keeps the pixel's true size.
    area = np.diff(rows, axis=1)[:, :, None] * np.diff(cols, axis=1)[:, None, :]
    rows, cols = np.clip(rows, 0, res), np.clip(cols, 0, res)
    corner = _summed_area()[k[:, None, None], rows[:, :, None], cols[:, None, :]]
    counts = corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
    # A footprint under one template pixel (images far above 256 px) degrades to point sampling.
    alpha = counts.astype(np.float32) / np.maximum(area, 1).astype(np.float32)
    return np.minimum(alpha, 1.0)


def render_codes(codes: np.ndarray, jitter: np.ndarray, config, chunk: int = 256) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 renders of attribute codes and jitter rows at a world config's size and
    anti-aliasing; ``chunk`` images a step keep the temporaries in cache."""
    s, col = config.image_size, {a: i for i, a in enumerate(ATTRIBUTES)}
    fg = np.array(list(COLOURS.values()), dtype=np.float32)[codes[:, col["colour"]]]
    bg = np.array(list(BACKGROUNDS.values()), dtype=np.float32)[codes[:, col["background"]]]
    cx, cy = s * (0.5 + jitter[:, 0]), s * (0.5 + jitter[:, 1])
    radius = s * np.array([_SIZE_FRACTION[z] for z in SIZES])[codes[:, col["size"]]] * jitter[:, 2]
    out = np.empty((len(codes), s, s, 3), dtype=np.uint8)
    for start in range(0, len(codes), chunk):
        sl = slice(start, start + chunk)
        alpha = coverage(codes[sl, col["shape"]], cx[sl], cy[sl], radius[sl], s, config.antialias)
        # bg + (fg - bg) * alpha, +0.5 then truncation = rounding (all values are non-negative).
        pixels = (fg[sl] - bg[sl])[:, None, None, :] * alpha[..., None]
        pixels += bg[sl, None, None, :] + np.float32(0.5)
        out[sl] = pixels.astype(np.uint8)
    return out
