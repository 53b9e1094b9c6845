"""How a tensor maps to the matrix of codes and to the grid of quantization parameters.

Kept apart from the codec so the encoder, the decoder and the baselines agree on one
definition of "row", "group" and "cell" (``spec/FORMAT.md`` copies it):

- A tensor of shape S is viewed as a matrix: ``(S[0], prod(S[1:]))`` when it has 2 or more
  axes (first axis = output channel), ``(1, numel)`` when it has 0 or 1 axes.
- Parameters form a grid of R × G *cells*:
  ``row``: R = matrix rows, G = 1; ``group``: R = matrix rows, G = ceil(cols / group_size),
  cell (r, g) covering columns [g·group_size, min((g+1)·group_size, cols)) of row r;
  ``tensor``: R = G = 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from llmc_format.errors import CodecError

GRANULARITIES = ("row", "group", "tensor")

#: Elements per working block: bounds the float64 temporaries of encode/decode (~8 MiB each).
CHUNK_ELEMENTS = 1 << 20


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, cols) matrix a tensor of ``shape`` is quantized as."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


@dataclass(frozen=True)
class Window:
    """A block of the matrix: rows [row0, row0+nrows) × columns [col0, col0+ncols)."""

    row0: int
    nrows: int
    col0: int
    ncols: int


def window(shape: tuple[int, ...], rows: tuple[int, int] | None, name: str = "") -> Window:
    """The matrix block holding tensor rows ``rows`` (all of it when None).

    For a 1-D tensor the tensor's rows are its elements, i.e. columns of the one matrix row;
    a 0-d tensor has no rows to select.
    """
    n_rows, n_cols = matrix_shape(shape)
    if rows is None:
        return Window(0, n_rows, 0, n_cols)
    if len(shape) == 0:
        raise CodecError(f"tensor {name!r}: a 0-d tensor has no rows to select (got {rows})")
    a, b = rows
    if not (isinstance(a, int | np.integer) and isinstance(b, int | np.integer)) or not (
        0 <= a <= b <= shape[0]
    ):
        raise CodecError(f"tensor {name!r}: bad row range {rows} for shape {list(shape)}")
    a, b = int(a), int(b)
    if len(shape) == 1:
        return Window(0, 1, a, b - a)
    return Window(a, b - a, 0, n_cols)


@dataclass(frozen=True)
class Grid:
    """The parameter cells of one tensor under one granularity."""

    rows: int
    cols: int
    granularity: str
    group_size: int

    @classmethod
    def of(cls, shape: tuple[int, ...], granularity: str, group_size: int) -> Grid:
        rows, cols = matrix_shape(shape)
        return cls(rows, cols, granularity, group_size)

    @property
    def param_rows(self) -> int:
        return 1 if self.granularity == "tensor" else self.rows

    @property
    def groups(self) -> int:
        if self.granularity == "group":
            return -(-self.cols // self.group_size)
        return 1

    @property
    def n_cells(self) -> int:
        return self.param_rows * self.groups

    def cell_counts(self) -> np.ndarray:
        """Elements per cell, broadcastable against an (R, G) array."""
        if self.granularity == "tensor":
            return np.array([[self.rows * self.cols]], dtype=np.float64)
        if self.granularity == "row":
            return np.array([[self.cols]], dtype=np.float64)
        counts = np.full((1, self.groups), self.group_size, dtype=np.float64)
        if self.groups:
            counts[0, -1] = self.cols - (self.groups - 1) * self.group_size
        return counts

    def expand(self, cells: np.ndarray, win: Window) -> np.ndarray:
        """Cell values for the elements of ``win``, broadcastable to (nrows, ncols).

        Only the cells covering the window are read, so decoding a few rows needs the
        parameters of those rows only.
        """
        if self.granularity == "tensor":
            return cells[:1, :1]
        sub = cells[win.row0 : win.row0 + win.nrows]
        if self.granularity == "row":
            return sub
        gidx = (win.col0 + np.arange(win.ncols)) // self.group_size
        return sub[:, gidx]

    def reduce(self, ufunc: np.ufunc, block: np.ndarray) -> np.ndarray:
        """Per-cell ``ufunc`` reduction of a block of whole matrix rows (needs cols > 0).

        Returns (nrows, G) for row/group and (1, 1) for tensor (to be combined over blocks).
        """
        if self.granularity == "tensor":
            return ufunc.reduce(block, axis=None, keepdims=True).reshape(1, 1)
        if self.granularity == "row":
            return ufunc.reduce(block, axis=1, keepdims=True)
        return ufunc.reduceat(block, np.arange(0, self.cols, self.group_size), axis=1)

    def row_blocks(self, win: Window | None = None) -> Iterator[Window]:
        """Split ``win`` (default: the whole matrix) into blocks of whole rows of bounded size."""
        win = win or Window(0, self.rows, 0, self.cols)
        step = max(1, CHUNK_ELEMENTS // max(win.ncols, 1))
        for r in range(win.row0, win.row0 + win.nrows, step):
            yield Window(r, min(step, win.row0 + win.nrows - r), win.col0, win.ncols)
