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
    #: decoding returns exactly the array encoded (``exact``, ``ffv1``, ``rowperm``); a
    #: pipeline of lossless stages reproduces its source, and pack checks it bit for bit
    lossless: ClassVar[bool] = False

    #: keys (besides "id") a *stored* config must hold, and keys it may hold; any other key,
    #: or a missing one, makes the tensor undecodable (spec/FORMAT.md §7, closed configs).
    #: ``None``: the codec declares no key sets (a third-party codec checks its own).
    required_keys: ClassVar[frozenset[str] | None] = None
    optional_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **params: Any) -> None:
        self.params = params

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        """How ``inspect`` names a stage with this stored config (default: the codec id)."""
        return cls.codec_id

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

    def raw_record(self, spec: ArraySpec, fetch: BlobFetcher, n_blobs: int) -> dict[str, Any] | None:
        """What ``llmc extract --raw`` writes about this stage: its stored parameters and the
        formula that turns its output integers back into ``spec``'s tensor, self-contained
        (plain JSON data), so a reader without llmc can rebuild the tensor. Called on the
        stored (post-encode) config; ``fetch`` returns this stage's verified blobs. None:
        this stage has no such description, and ``--raw`` refuses tensors using it."""
        return None


class ArrayBytesCodec(Codec):
    """The final stage: an array becomes one or more independently decodable blobs.

    The class attributes below are what the rest of llmc knows about a final stage: the
    pack policy, RD targets, ``extract --raw`` and the CLI ask the codec class, never a
    table of codec names, so a codec registered by entry point is chosen, packed to a
    target and extracted like a built-in one (docs/architecture.md, "Adding a codec").
    """

    kind = "bytes"

    #: codes the integer samples of a quantization stage (``affine`` or ``blockdct`` in
    #: front of it, ``bits`` wide), as the video codecs do; False: codes the tensor's own
    #: values, any dtype (``exact``). Takes ``bits`` (and ``qp``/``preset`` with a QP).
    takes_samples: ClassVar[bool] = False
    #: a ``--codec`` choice; False for a stage a source chooses itself (``ggml`` keeps a
    #: GGUF file's own blocks)
    selectable: ClassVar[bool] = True
    #: the inclusive range of the ``qp`` parameter; None: the codec takes no ``qp`` or
    #: ``preset`` (a lossless codec)
    qp_range: ClassVar[tuple[int, int] | None] = None
    #: the QPs rate-distortion sampling measures a tensor at when packing to a size,
    #: bits-per-weight or SNR target; empty: this codec cannot pack to a target
    sample_qps: ClassVar[tuple[int, ...]] = ()
    #: the quantizer step doubles every 6 QP (H.26x): a tensor's sample QPs are shifted by
    #: its spread under per-tensor scaling (``pipeline.target.sample_qps``)
    log_step: ClassVar[bool] = False
    #: may code ``blockdct`` codes: the codec quantizes a block DCT of its samples
    accepts_dct: ClassVar[bool] = False
    #: ``transform="auto"`` under a target puts ``blockdct`` in front of this codec
    #: (a measured gain: docs/results/tuning.md)
    prefers_dct: ClassVar[bool] = False
    #: takes a run-time ``threads`` parameter (not stored; the bitstream does not depend on it)
    threaded: ClassVar[bool] = False
    #: ``extract --raw``: the file extension of each blob (a standalone file some other
    #: tool reads); None: the blobs have no raw form and ``--raw`` refuses
    raw_extension: ClassVar[str | None] = None

    @classmethod
    def kept_encoding(cls, config: dict[str, Any]) -> dict[str, Any] | None:
        """The source file's own encoding a stored config of this codec keeps (``ggml``
        keeps a GGUF tensor's blocks), as the encoder config that stores the same blocks
        again (``{"id": "ggml", "type": "Q4_1"}``); None: the codec stores values. A tensor
        stored so can be written back byte for byte (``unpack --format gguf``) and is
        repacked without decoding."""
        return None

    @classmethod
    def digest_portable(cls, config: dict[str, Any], values: np.ndarray) -> bool:
        """Whether every conforming decoder gives exactly these ``values`` (the whole
        decoded tensor of a pipeline ending in this stage), so that a writer records their
        ``digest.decoded`` (FORMAT.md §5.6). True unless the spec leaves some bits of a
        codec's values to the implementation: ``ggml``'s NaNs from an operation on two
        NaNs (§7.6), where a digest would fail a conforming reader that chose the other."""
        return True

    def raw_record(self, spec: ArraySpec, files: list[str], sizes: list[int]) -> dict[str, Any]:
        """What ``extract --raw`` writes about this stage's blobs (one file each, ``files``
        of ``sizes`` bytes): how to decode them into ``spec``'s integer array without llmc
        (a JSON-ready map; its keys go to the top level of the sidecar). Called on the
        stored config, only when ``raw_extension`` is set."""
        raise CodecError(f"codec {self.codec_id!r} has no raw form")

    @abstractmethod
    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        """Serialize ``array`` (which matches ``spec``) to ``Encoded.blobs``."""

    @abstractmethod
    def decode(
        self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec, rows: Rows | None = None
    ) -> np.ndarray:
        """Rebuild ``spec``'s array (or its rows ``rows``), never producing more than it."""
