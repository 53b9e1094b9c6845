"""Map a tensor of integers to video frames and back.

**The 2-D view.** A tensor of shape ``(s0, s1, ..., sk)`` with k >= 1 is coded as the
matrix ``(s0, s1*...*sk)`` (C order), so the first axis stays the row axis and a row
range of the tensor is a row range of the matrix. A 1-D tensor ``(n,)`` is the single row
``(1, n)``: its "rows" (elements) are then columns, and a range of them maps to a column
range. 0-d and empty tensors are refused: a video frame cannot be empty, and they are
better stored by the ``exact`` codec anyway.

**The tiling rule** (``plan``). Inputs: the matrix size ``R x C``; the codec's
``align`` (frame sides must be multiples of it) and ``min_size`` (smallest frame side);
the limits ``max_width``, ``max_height`` (multiples of ``align``) and ``target_pixels``.
With ``up(x, a) = ceil(x / a) * a`` and ``down(x, a) = floor(x / a) * a``:

1. ``n_cols = ceil(C / max_width)`` column tiles of width ``tile_cols = up(ceil(C / n_cols), align)``;
2. a band height goal ``h0 = min(max_height, max(align, down(target_pixels // tile_cols, align)))``,
   ``n_bands = ceil(R / h0)`` bands of height ``tile_rows = up(ceil(R / n_bands), align)``;
3. frame ``k = i * n_cols + j`` (bands outer, row-major) holds rows
   ``[i*tile_rows, min((i+1)*tile_rows, R))`` and columns ``[j*tile_cols, min((j+1)*tile_cols, C))``;
4. each frame is padded on the bottom and right, by repeating its last row / column
   (edge replication codes cheaper than zeros: no artificial edge for the transform),
   to ``max(min_size, up(h, align)) x max(min_size, up(w, align))``.

An encoder may round the tile sizes of steps 1–2 to a multiple of ``align`` instead
(``tile_align``; ``vvc`` and ``hevc``: 32, their block grid, when there is more than one band /
tile column); readers only require multiples of ``align``.
Balancing the tiles (step 1 and 2 divide evenly instead of cutting full tiles plus a
remainder) avoids thin slivers; aligning ``tile_rows``/``tile_cols`` means only the last
band / tile column ever carries padding. ``target_pixels`` trades encoder start-up cost
(one FFmpeg process per frame; ~1 M pixels makes it a few %) against the rows a reader
must decode to get one row. The number of bands is exactly ``ceil(R / tile_rows)``
(same for columns), which ``FrameGeometry.from_config`` checks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from llmc_format.errors import CodecError

#: Upper bound of any frame side we accept from a stored config (the largest any codec
#: here can code is 16384; more is a corrupt or hostile file).
MAX_SIDE = 1 << 14


def as_2d(shape: tuple[int, ...], name: str = "") -> tuple[int, int]:
    """The ``(rows, cols)`` matrix a tensor of ``shape`` is coded as (see module doc)."""
    if len(shape) == 0 or math.prod(shape) == 0:
        raise CodecError(
            f"tensor {name!r}: video codecs need a non-empty tensor of >= 1 dimension, "
            f"got shape {list(shape)} (store it with the 'exact' codec)"
        )
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def window_2d(shape: tuple[int, ...], rows: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """The ``(r0, r1, c0, c1)`` box of the 2-D view holding ``tensor[rows[0]:rows[1]]``."""
    _, n_cols = as_2d(shape)
    a, b = (0, shape[0]) if rows is None else rows
    if len(shape) == 1:
        return 0, 1, a, b
    return a, b, 0, n_cols


@dataclass(frozen=True)
class FrameGeometry:
    """How an ``rows x cols`` matrix is cut into frames; stored in the codec config."""

    rows: int
    cols: int
    tile_rows: int
    tile_cols: int
    align: int
    min_size: int

    @property
    def n_bands(self) -> int:
        return -(-self.rows // self.tile_rows)

    @property
    def n_col_tiles(self) -> int:
        return -(-self.cols // self.tile_cols)

    @property
    def n_frames(self) -> int:
        return self.n_bands * self.n_col_tiles

    def box(self, k: int) -> tuple[int, int, int, int]:
        """``(r0, r1, c0, c1)``: the part of the matrix frame ``k`` holds."""
        i, j = divmod(k, self.n_col_tiles)
        r0, c0 = i * self.tile_rows, j * self.tile_cols
        return r0, min(r0 + self.tile_rows, self.rows), c0, min(c0 + self.tile_cols, self.cols)

    def frame_shape(self, k: int) -> tuple[int, int]:
        """``(height, width)`` of frame ``k`` as coded, padding included."""
        r0, r1, c0, c1 = self.box(k)
        return self._padded(r1 - r0), self._padded(c1 - c0)

    def frames_for(self, r0: int, r1: int, c0: int, c1: int) -> list[int]:
        """Indices of the frames that intersect the box ``[r0, r1) x [c0, c1)`` (ascending)."""
        if r0 >= r1 or c0 >= c1:
            return []
        bands = range(r0 // self.tile_rows, (r1 - 1) // self.tile_rows + 1)
        tiles = range(c0 // self.tile_cols, (c1 - 1) // self.tile_cols + 1)
        return [i * self.n_col_tiles + j for i in bands for j in tiles]

    def _padded(self, n: int) -> int:
        return max(self.min_size, -(-n // self.align) * self.align)

    def to_config(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: Any, rows: int, cols: int, name: str = "") -> FrameGeometry:
        """Validate a stored geometry against the tensor it claims to describe."""
        fields = ("rows", "cols", "tile_rows", "tile_cols", "align", "min_size")
        if not isinstance(config, dict) or set(config) != set(fields):
            raise CodecError(f"tensor {name!r}: frame geometry must be a map of {fields}, "
                             f"got {config!r:.200}")
        values = {k: config[k] for k in fields}
        for key, value in values.items():
            if type(value) is not int or not 1 <= value <= (1 << 62):
                raise CodecError(f"tensor {name!r}: frame geometry {key}={value!r} is not "
                                 f"a positive integer")
        geom = cls(**values)
        if (geom.rows, geom.cols) != (rows, cols):
            raise CodecError(f"tensor {name!r}: frame geometry is for a {geom.rows}x{geom.cols} "
                             f"matrix, the tensor is {rows}x{cols}")
        if (geom.tile_rows % geom.align or geom.tile_cols % geom.align
                or max(geom.tile_rows, geom.tile_cols, geom.min_size) > MAX_SIDE):
            raise CodecError(f"tensor {name!r}: bad frame geometry {values}")
        return geom


def plan(
    rows: int, cols: int, *, max_width: int, max_height: int, target_pixels: int,
    align: int, min_size: int, tile_align: int | None = None,
) -> FrameGeometry:
    """Cut an ``rows x cols`` matrix into frames by the rule in the module docstring.

    ``tile_align`` (a multiple of ``align``; default ``align``) is an encoder's choice, not
    part of the format: the rule's steps 1–2 round tile sizes to it instead of ``align``,
    so every frame starts on a multiple of it (``vvc``: 32, its coding-block grid, which
    ``blockdct``'s 32x32 blocks must coincide with). It applies when ``max_width`` and
    ``max_height`` are multiples of it; readers only check multiples of ``align``.
    """
    if max_width % align or max_height % align or min(max_width, max_height) < align:
        raise CodecError(f"max_width={max_width} and max_height={max_height} must be "
                         f"positive multiples of {align}")
    step = tile_align or align
    if step % align or max_width % step or max_height % step:
        step = align
    n_cols = -(-cols // max_width)
    tile_cols = _up(-(-cols // n_cols), align if n_cols == 1 else step)  # one tile starts at 0
    h0 = min(max_height, max(step, target_pixels // tile_cols // step * step))
    n_bands = -(-rows // h0)
    tile_rows = _up(-(-rows // n_bands), align if n_bands == 1 else step)
    return FrameGeometry(rows, cols, tile_rows, tile_cols, align, min_size)


def _up(n: int, a: int) -> int:
    return -(-n // a) * a


def split(matrix: np.ndarray, geom: FrameGeometry) -> Iterator[np.ndarray]:
    """Yield the padded frames of ``matrix`` in frame order (C-contiguous uint16 arrays)."""
    for k in range(geom.n_frames):
        r0, r1, c0, c1 = geom.box(k)
        height, width = geom.frame_shape(k)
        tile = matrix[r0:r1, c0:c1]
        pad = ((0, height - (r1 - r0)), (0, width - (c1 - c0)))
        yield np.ascontiguousarray(np.pad(tile, pad, mode="edge") if any(p for _, p in pad) else tile)


def place(
    out: np.ndarray, frame: np.ndarray, geom: FrameGeometry, k: int, box: tuple[int, int, int, int]
) -> None:
    """Copy the part of decoded frame ``k`` inside ``box`` (matrix coordinates) into ``out``.

    ``out`` holds exactly ``box``: its element ``[0, 0]`` is matrix element ``(box[0], box[2])``.
    """
    fr0, fr1, fc0, fc1 = geom.box(k)
    r0, r1 = max(fr0, box[0]), min(fr1, box[1])
    c0, c1 = max(fc0, box[2]), min(fc1, box[3])
    out[r0 - box[0]:r1 - box[0], c0 - box[2]:c1 - box[2]] = frame[r0 - fr0:r1 - fr0, c0 - fc0:c1 - fc0]
