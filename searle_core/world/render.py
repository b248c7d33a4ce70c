"""Drawing for the ``shapes`` world: flat-coloured shapes on flat backgrounds, vectorised in numpy.

Each shape is drawn once, at high resolution, as a boolean *template* in normalised coordinates
(the shape fits in ``[-1, 1]^2``), with its summed-area table. A pixel's coverage (anti-aliased
alpha) is the template area under the pixel's footprint, read from four table corners, and the
pixel is alpha-blended between background and foreground colours. Because shapes are only
translated and scaled (never rotated), footprints are axis-aligned and separable: corner rows
depend on the pixel row only and corner columns on the pixel column only, so one fancy-indexing
gather renders a whole batch, whatever the shapes are.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

# Polygons in normalised, y-up coordinates. Each one is centred on its bounding box so position
# jitter means the same thing for every shape, and fits in [-1, 1]^2 so scale = half-extent.
_STAR_ANGLES = np.deg2rad(90.0 + 36.0 * np.arange(10))
_STAR_RADII = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
_STAR = np.stack([_STAR_RADII * np.cos(_STAR_ANGLES), _STAR_RADII * np.sin(_STAR_ANGLES)], axis=1)
_STAR[:, 1] -= (_STAR[:, 1].max() + _STAR[:, 1].min()) / 2  # centre the bounding box vertically

_TRI = np.array([[0.0, 1.0], [-0.95, -0.65], [0.95, -0.65]])
_TRI[:, 1] -= (_TRI[:, 1].max() + _TRI[:, 1].min()) / 2

_ARM = 0.3  # half-width of a cross arm: thick enough to survive at ~6 px radius
_CROSS = np.array(
    [
        [-_ARM, 0.95],
        [_ARM, 0.95],
        [_ARM, _ARM],
        [0.95, _ARM],
        [0.95, -_ARM],
        [_ARM, -_ARM],
        [_ARM, -0.95],
        [-_ARM, -0.95],
        [-_ARM, -_ARM],
        [-0.95, -_ARM],
        [-0.95, _ARM],
        [-_ARM, _ARM],
    ]
)

# Right-pointing arrow: a thick shaft and a wide head, so it is not a triangle or a cross.
_ARROW = np.array(
    [
        [-0.95, -0.24],
        [0.05, -0.24],
        [0.05, -0.75],
        [0.95, 0.0],
        [0.05, 0.75],
        [0.05, 0.24],
        [-0.95, 0.24],
    ]
)

_SQUARE = np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])

#: Shape name -> polygon vertices (y-up), or ``None`` for the circle (drawn analytically).
SHAPE_GEOMETRY: dict[str, np.ndarray | None] = {
    "circle": None,
    "square": _SQUARE,
    "triangle": _TRI,
    "star": _STAR,
    "cross": _CROSS,
    "arrow": _ARROW,
}

_TEMPLATE_RES = 512  # template pixels across [-_EXTENT, _EXTENT]: ~0.1 px error at 64x64 images
_EXTENT = 1.25  # margin beyond [-1, 1] so clipped lookups land on empty template pixels
_CIRCLE_RADIUS = 0.95


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd (crossing-number) point-in-polygon test, vectorised over points.

    Args:
        u: x coordinates, any shape.
        v: y coordinates, same shape as ``u``.
        poly: ``(K, 2)`` vertices in order; may be non-convex (the star).
    """
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
def shape_templates(shapes: tuple[str, ...]) -> np.ndarray:
    """High-resolution boolean masks of the shapes, rows top-to-bottom.

    Args:
        shapes: shape names, keys of :data:`SHAPE_GEOMETRY`; the output follows their order.

    Returns:
        ``(len(shapes), R, R)`` bool array covering ``[-1.25, 1.25]^2``.
    """
    centres = (np.arange(_TEMPLATE_RES) + 0.5) / _TEMPLATE_RES * 2 * _EXTENT - _EXTENT
    u = np.broadcast_to(centres[None, :], (_TEMPLATE_RES, _TEMPLATE_RES))
    v = np.broadcast_to(-centres[:, None], (_TEMPLATE_RES, _TEMPLATE_RES))  # row 0 is the top
    out = np.zeros((len(shapes), _TEMPLATE_RES, _TEMPLATE_RES), dtype=bool)
    for i, name in enumerate(shapes):
        geometry = SHAPE_GEOMETRY[name]
        out[i] = (u**2 + v**2 <= _CIRCLE_RADIUS**2) if geometry is None else _inside_polygon(u, v, geometry)
    out.setflags(write=False)
    return out


@cache
def _summed_area(shapes: tuple[str, ...]) -> np.ndarray:
    """Summed-area tables of the templates: ``sat[k, r, c]`` = filled pixels above-left of (r, c)."""
    sat = np.zeros((len(shapes), _TEMPLATE_RES + 1, _TEMPLATE_RES + 1), dtype=np.int32)
    sat[:, 1:, 1:] = shape_templates(shapes).cumsum(axis=1, dtype=np.int32).cumsum(axis=2)
    sat.setflags(write=False)
    return sat


def coverage(
    shape_idx: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    image_size: int,
    shapes: Sequence[str],
    antialias: bool = True,
) -> np.ndarray:
    """Fraction of each pixel covered by the shape (an alpha mask).

    With ``antialias`` the coverage is the exact area of the template under the pixel's footprint,
    read from a summed-area table: four corner look-ups per pixel, shared between neighbours, so
    a batch costs one gather of ``(S+1)^2`` corners per image (faster than 4x4 supersampling and
    a true box filter). Without it each pixel samples the template at its centre (hard edges).

    Args:
        shape_idx: ``(N,)`` indices into ``shapes``.
        cx: ``(N,)`` shape centre column, in pixels (pixel ``i`` spans ``[i, i+1)``).
        cy: ``(N,)`` shape centre row, in pixels.
        radius: ``(N,)`` half-extent of the shape's bounding box, in pixels.
        image_size: output height and width.
        shapes: shape names, in the order ``shape_idx`` refers to.
        antialias: box-filtered edges (True) or point-sampled ones (False).

    Returns:
        ``(N, S, S)`` float32 in ``[0, 1]``.
    """
    shapes = tuple(shapes)
    s, res = image_size, _TEMPLATE_RES
    scale = res / (2 * _EXTENT)  # template pixels per normalised unit
    k = np.asarray(shape_idx, dtype=np.intp)

    def to_template(pixels: np.ndarray, centre: np.ndarray) -> np.ndarray:
        return ((pixels[None, :] - centre[:, None]) / radius[:, None] + _EXTENT) * scale

    if not antialias:
        centres = np.arange(s, dtype=np.float64) + 0.5
        cols = np.clip(np.floor(to_template(centres, cx)).astype(np.intp), 0, res - 1)
        rows = np.clip(np.floor(to_template(centres, cy)).astype(np.intp), 0, res - 1)
        return shape_templates(shapes)[k[:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float32)

    edges = np.arange(s + 1, dtype=np.float64)  # pixel boundaries
    cols = np.rint(to_template(edges, cx)).astype(np.intp)  # y-down image rows match template rows
    rows = np.rint(to_template(edges, cy)).astype(np.intp)
    # Footprint area before clipping: outside the template there is nothing, so clipping the
    # corners keeps the count right while the area keeps the pixel's true size.
    area = np.diff(rows, axis=1)[:, :, None] * np.diff(cols, axis=1)[:, None, :]
    rows, cols = np.clip(rows, 0, res), np.clip(cols, 0, res)
    corner = _summed_area(shapes)[k[:, None, None], rows[:, :, None], cols[:, None, :]]
    counts = corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
    # A footprint under one template pixel (images far above 256 px) degrades to point sampling.
    alpha = counts.astype(np.float32) / np.maximum(area, 1).astype(np.float32)
    return np.minimum(alpha, 1.0)


def render(
    shape_idx: np.ndarray,
    foreground: np.ndarray,
    background: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    image_size: int,
    shapes: Sequence[str],
    antialias: bool = True,
    chunk: int = 256,
) -> np.ndarray:
    """Render a batch of images.

    Args:
        shape_idx: ``(N,)`` indices into ``shapes``.
        foreground: ``(N, 3)`` RGB of each shape.
        background: ``(N, 3)`` RGB of each background.
        cx: ``(N,)`` centre columns in pixels.
        cy: ``(N,)`` centre rows in pixels.
        radius: ``(N,)`` half-extents in pixels.
        image_size: output height and width.
        shapes: shape names, in the order ``shape_idx`` refers to.
        antialias: box-filtered (True) or hard (False) edges.
        chunk: images per vectorised step; small enough that temporaries stay in cache.

    Returns:
        ``(N, S, S, 3)`` uint8 RGB.
    """
    n = len(shape_idx)
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    fg = np.asarray(foreground, dtype=np.float32)
    bg = np.asarray(background, dtype=np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        alpha = coverage(shape_idx[sl], cx[sl], cy[sl], radius[sl], image_size, shapes, antialias)
        # bg + (fg - bg) * alpha, +0.5 then truncation = rounding (all values are non-negative).
        pixels = (fg[sl] - bg[sl])[:, None, None, :] * alpha[..., None]
        pixels += bg[sl, None, None, :] + np.float32(0.5)
        out[sl] = pixels.astype(np.uint8)
    return out
