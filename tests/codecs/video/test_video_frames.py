"""The tiling rule of frames.py, checked without any encoder (pure numpy, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.video import frames
from llmc_format.codecs.video.frames import FrameGeometry
from llmc_format.errors import CodecError

aligns = st.sampled_from([1, 8])


@st.composite
def geometries(draw: st.DrawFn) -> FrameGeometry:
    align = draw(aligns)
    return frames.plan(
        draw(st.integers(1, 120)), draw(st.integers(1, 120)),
        max_width=align * draw(st.integers(1, 8)), max_height=align * draw(st.integers(1, 8)),
        target_pixels=draw(st.integers(1, 5000)), align=align,
        min_size=draw(st.sampled_from([1, 16])),
    )


@given(geometries())
@settings(max_examples=100, deadline=None)
def test_frames_tile_the_matrix_exactly_once(geom: FrameGeometry) -> None:
    seen = np.zeros((geom.rows, geom.cols), dtype=np.int32)
    for k in range(geom.n_frames):
        r0, r1, c0, c1 = geom.box(k)
        assert r1 > r0 and c1 > c0
        seen[r0:r1, c0:c1] += 1
        height, width = geom.frame_shape(k)
        assert height % geom.align == 0 or height == geom.min_size
        assert width % geom.align == 0 or width == geom.min_size
        assert height >= max(r1 - r0, geom.min_size) and width >= max(c1 - c0, geom.min_size)
    assert (seen == 1).all()


@given(geometries())
@settings(max_examples=100, deadline=None)
def test_tiles_respect_the_limits_and_only_the_last_ones_are_partial(geom: FrameGeometry) -> None:
    assert geom.tile_rows % geom.align == 0 and geom.tile_cols % geom.align == 0
    for k in range(geom.n_frames):
        i, j = divmod(k, geom.n_col_tiles)
        r0, r1, c0, c1 = geom.box(k)
        if i < geom.n_bands - 1:
            assert r1 - r0 == geom.tile_rows
        if j < geom.n_col_tiles - 1:
            assert c1 - c0 == geom.tile_cols


@pytest.mark.parametrize(
    ("rows", "cols", "expect"),
    [
        # (tile_rows, tile_cols, n_frames) for max side 4096, 1 M pixels, align 8
        (576, 1536, (576, 1536, 1)),
        (4096, 4096, (256, 4096, 16)),
        (30522, 384, (2544, 384, 12)),
        (4096, 14336, (280, 3584, 60)),
        (1, 100, (8, 104, 1)),
    ],
)
def test_plan_matches_the_documented_rule_on_real_shapes(
    rows: int, cols: int, expect: tuple[int, int, int]
) -> None:
    geom = frames.plan(rows, cols, max_width=4096, max_height=4096, target_pixels=1 << 20,
                       align=8, min_size=16)
    assert (geom.tile_rows, geom.tile_cols, geom.n_frames) == expect


@given(geometries(), st.data())
@settings(max_examples=100, deadline=None)
def test_split_then_place_rebuilds_any_window(geom: FrameGeometry, data: st.DataObject) -> None:
    matrix = np.arange(geom.rows * geom.cols, dtype=np.uint16).reshape(geom.rows, geom.cols)
    r0 = data.draw(st.integers(0, geom.rows - 1))
    r1 = data.draw(st.integers(r0 + 1, geom.rows))
    c0 = data.draw(st.integers(0, geom.cols - 1))
    c1 = data.draw(st.integers(c0 + 1, geom.cols))
    box = (r0, r1, c0, c1)
    wanted = set(geom.frames_for(*box))
    out = np.zeros((r1 - r0, c1 - c0), dtype=np.uint16)
    for k, frame in enumerate(frames.split(matrix, geom)):
        assert frame.shape == geom.frame_shape(k) and frame.flags.c_contiguous
        fr0, fr1, fc0, fc1 = geom.box(k)
        intersects = fr0 < r1 and r0 < fr1 and fc0 < c1 and c0 < fc1
        assert (k in wanted) == intersects
        if intersects:
            frames.place(out, frame, geom, k, box)
    np.testing.assert_array_equal(out, matrix[r0:r1, c0:c1])


def test_padding_replicates_the_edge() -> None:
    geom = frames.plan(3, 5, max_width=8, max_height=8, target_pixels=64, align=8, min_size=8)
    matrix = np.arange(15, dtype=np.uint16).reshape(3, 5)
    (frame,) = frames.split(matrix, geom)
    assert frame.shape == (8, 8)
    np.testing.assert_array_equal(frame[:3, :5], matrix)
    np.testing.assert_array_equal(frame[5], frame[2])  # bottom rows repeat the last row
    np.testing.assert_array_equal(frame[:, 7], frame[:, 4])  # right columns repeat the last one


@pytest.mark.parametrize(
    ("shape", "matrix", "rows", "window"),
    [
        ((7, 3, 4), (7, 12), (2, 5), (2, 5, 0, 12)),
        ((9, 5), (9, 5), None, (0, 9, 0, 5)),
        ((10,), (1, 10), (3, 8), (0, 1, 3, 8)),
    ],
)
def test_2d_view_keeps_the_row_axis(
    shape: tuple[int, ...], matrix: tuple[int, int], rows: tuple[int, int] | None,
    window: tuple[int, int, int, int],
) -> None:
    assert frames.as_2d(shape) == matrix
    assert frames.window_2d(shape, rows) == window


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (0, 4, 4)])
def test_0d_and_empty_tensors_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(CodecError, match="non-empty"):
        frames.as_2d(shape, "t")


def _good() -> dict[str, int]:
    return {"rows": 20, "cols": 30, "tile_rows": 8, "tile_cols": 16, "align": 8, "min_size": 16}


@pytest.mark.parametrize(
    "change",
    [
        {"rows": 21},  # not the tensor's shape
        {"tile_rows": 12},  # not a multiple of align
        {"tile_cols": 0},
        {"tile_cols": True},  # bool is not an int here
        {"tile_cols": 1 << 20},  # beyond any codec
        {"extra": 1},
    ],
)
def test_stored_geometry_is_validated(change: dict[str, int]) -> None:
    assert FrameGeometry.from_config(_good(), 20, 30).n_frames == 3 * 2
    with pytest.raises(CodecError, match="'t'"):
        FrameGeometry.from_config({**_good(), **change}, 20, 30, "t")
