"""The codec interface: how a tensor becomes blobs and back.

A tensor is stored through a *pipeline*: zero or more array→array stages (e.g. affine
quantization to 10-bit integers) followed by exactly one array→bytes stage (e.g. a VVC
bitstream per frame, or the lossless ``exact`` coder). Each stage is a ``Codec`` whose
whole state is a plain-data config (``{"id": ..., ...}``: str/int/float/bool/bytes/list/
dict only) — the thing the index stores. A codec knows nothing of files: blobs go in and
out as ``bytes``; the container checks their checksums before a codec sees them.

Why stages own blobs: affine quantization has side data (scales, zero points) that must
live in the file and count in its size; a video stage has one blob per frame so a reader
can decode a block of rows without the rest. So every stage may emit blobs, and at
decode time gets a ``fetch(i)`` callable that returns its i-th blob, verified, on demand.

Row ranges: every stage preserves the first axis ("rows") of the tensor, so
``decode(..., rows=(a, b))`` can return just ``tensor[a:b]`` while fetching only the blobs
that cover those rows.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from llmc_format import dtypes
from llmc_format.errors import CodecError

#: Returns the verified bytes of blob ``i`` of the stage being decoded.
BlobFetcher = Callable[[int], bytes]
Rows = tuple[int, int]


@dataclass(frozen=True)
class ArraySpec:
    """What an array is, without its data: format dtype name, shape, and a name for errors."""

    dtype: str
    shape: tuple[int, ...]
    name: str = ""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * dtypes.itemsize(self.dtype)

    @property
    def np_dtype(self) -> np.dtype:
        return dtypes.to_numpy(self.dtype)

    def rows_shape(self, rows: Rows | None) -> tuple[int, ...]:
        """Shape of ``tensor[a:b]`` (or the whole tensor when ``rows`` is None)."""
        if rows is None:
            return self.shape
        return (rows[1] - rows[0], *self.shape[1:])

    def check(self, array: np.ndarray, rows: Rows | None = None, what: str = "decoded") -> np.ndarray:
        """Raise ``CodecError`` unless ``array`` has exactly this dtype and (row) shape."""
        want = self.rows_shape(rows)
        if array.dtype != self.np_dtype or tuple(array.shape) != want:
            raise CodecError(
                f"tensor {self.name!r}: {what} array is {array.dtype}{list(array.shape)}, "
                f"expected {self.dtype}{list(want)}"
            )
        return array


@dataclass
class Encoded:
    """What one stage's encode produced."""

    blobs: list[bytes]
    #: the config to store: the codec's parameters plus anything per-tensor it needs to decode
    config: dict[str, Any]
    #: the array passed to the next stage (array→array stages only)
    array: np.ndarray | None = None
    #: plain-data facts worth recording (quantization / rate-distortion metadata)
    info: dict[str, Any] = field(default_factory=dict)
    #: what ``decode`` of these blobs returns, when the encoder had it anyway (a lossy
    #: codec that decodes its output to check it): spares measuring the loss a decode
    reconstruction: np.ndarray | None = None


class Codec(ABC):
    """A pipeline stage. Subclasses set ``codec_id`` and take their parameters as kwargs."""

    codec_id: ClassVar[str]
    #: "array" for array→array stages, "bytes" for the final array→bytes stage
    kind: ClassVar[str]

    #: keys (besides "id") a *stored* config must hold, and keys it may hold; any other key,
    #: or a missing one, makes the tensor undecodable (spec/FORMAT.md §7, closed configs).
    #: ``None``: the codec declares no key sets (a third-party codec checks its own).
    required_keys: ClassVar[frozenset[str] | None] = None
    optional_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **params: Any) -> None:
        self.params = params

    @classmethod
    def check_stored_config(cls, config: dict[str, Any], where: str = "") -> None:
        """Refuse a stored config that lacks a required key or holds an unlisted one.

        Encoders take defaults; a stored config takes none: a reader that substituted a
        default for a missing key could decode what another reader refuses (one rule for
        both, FORMAT.md §7). Writers always wrote every required key, so old files pass.
        """
        if cls.required_keys is not None:
            check_config_keys(cls.codec_id, config, cls.required_keys, cls.optional_keys, where)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, **self.params}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        params = {k: v for k, v in config.items() if k != "id"}
        try:
            return cls(**params)
        except TypeError as exc:
            raise CodecError(f"bad config for codec {cls.codec_id!r}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def check_config_keys(codec_id: str, config: dict[str, Any], required: frozenset[str] | set[str],
                      optional: frozenset[str] | set[str], where: str = "") -> None:
    """``CodecError`` unless ``config`` holds every ``required`` key and nothing but those,
    ``optional`` ones and ``id``."""
    keys = set(config) - {"id"}
    missing, unknown = sorted(required - keys), sorted(keys - required - optional)
    if missing or unknown:
        what = "; ".join(filter(None, (missing and f"lacks {missing}",
                                       unknown and f"has unknown keys {unknown}")))
        raise CodecError(f"{where}: stored {codec_id!r} config {what}")


class ArrayArrayCodec(Codec):
    """A stage mapping an array to another array with the same first axis."""

    kind = "array"

    @abstractmethod
    def resolve(self, spec: ArraySpec) -> ArraySpec:
        """The spec of this stage's output for input ``spec`` — from the config alone."""

    @abstractmethod
    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        """Transform; ``Encoded.array`` goes to the next stage, ``blobs`` are side data."""

    @abstractmethod
    def decode(
        self, array: np.ndarray, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
        rows: Rows | None = None,
    ) -> np.ndarray:
        """Invert ``encode``: ``array`` holds the output rows ``input_rows(rows)``; return
        input rows ``rows``."""

    def input_rows(self, rows: Rows | None, spec: ArraySpec) -> Rows | None:
        """The rows of this stage's output needed to decode rows ``rows`` of its input.

        Most stages map row to row; a stage mixing neighbouring rows (``blockdct``: whole
        bands of 32) widens the range, and the pipeline fetches the wider range below it.
        """
        return rows

    @property
    def row_align(self) -> int:
        """Row ranges starting and ending on multiples of this (or at the last row) need no
        widening by ``input_rows`` (RD sampling picks its row blocks so)."""
        return 1


class ArrayBytesCodec(Codec):
    """The final stage: an array becomes one or more independently decodable blobs."""

    kind = "bytes"

    @abstractmethod
    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        """Serialize ``array`` (which matches ``spec``) to ``Encoded.blobs``."""

    @abstractmethod
    def decode(
        self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec, rows: Rows | None = None
    ) -> np.ndarray:
        """Rebuild ``spec``'s array (or its rows ``rows``), never producing more than it."""
