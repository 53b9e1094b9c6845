"""Which codec pipeline each tensor gets.

Default rule (spec'd in the README): with a lossy codec chosen, large floating-point
matrices go lossy; everything small or sensitive stays ``exact`` — 1-D tensors (norms,
biases), tensors under ``min_lossy_numel`` elements, integer tensors — and so do token
embeddings and output heads, whose errors hit every token, unless a ``--lossy`` pattern
names them. ``--lossless``/``--lossy`` glob patterns (fnmatch on the tensor name)
override, ``--lossless`` winning over ``--lossy``.

With a target (``pipeline.target``) the embeddings and heads are candidates like every
other large matrix (``lossy_embeddings``): the RD allocation decides their rate, keeping
them exact in their source encoding when that is the better use of the bytes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmc_format import dtypes
from llmc_format.codecs.base import ArrayBytesCodec
from llmc_format.codecs.diagscale import DiagScales
from llmc_format.codecs.registry import final_codecs, get_codec_class
from llmc_format.errors import CodecError, SourceError, UnknownCodecError

#: how a lossy tensor becomes integer samples: ``none`` = the ``affine`` stage; ``dct`` =
#: the ``blockdct`` stage (codes of the block-wise inverse DCT, one scale per tensor);
#: ``auto`` = ``dct`` for packs to a target with a codec that ``prefers_dct`` (vvc, hevc)
#: unless an affine granularity is chosen, else ``none``
#: (``pipeline.target.with_target_scaling``)
TRANSFORMS = ("auto", "none", "dct")
#: the quantization stage (codec id) each transform puts in front of a codec of samples;
#: ``repack`` reads an archive's transform back from it (``transform_of``)
QUANT_STAGES = {"none": "affine", "dct": "blockdct"}


def transform_of(quant_stage_id: str) -> str | None:
    """The transform whose quantization stage is ``quant_stage_id``; None for another stage."""
    return next((t for t, sid in QUANT_STAGES.items() if sid == quant_stage_id), None)


def codec_choices() -> list[str]:
    """The ids ``--codec`` accepts: every registered final stage (built-in or plugin)."""
    return [i for i, c in final_codecs().items() if c.selectable]


def final_codec(codec: str) -> type[ArrayBytesCodec]:
    """The class of the final stage ``codec``; SourceError naming the choices otherwise."""
    try:
        cls = get_codec_class(codec, "--codec")
    except UnknownCodecError:
        cls = None
    if cls is None or not issubclass(cls, ArrayBytesCodec) or not cls.selectable:
        raise SourceError(f"unknown codec {codec!r}; choose one of {', '.join(codec_choices())}")
    return cls

#: names of token embeddings and output heads across common architectures
_EMBEDDING_RE = re.compile(
    r"(^|\.)(embed_tokens|wte|word_embeddings|tok_embeddings|embed_in|embed_out|lm_head|"
    r"token_embd|shared)(\.|$)|^output\.weight$"  # top-level `output`: Meta/GGUF output head
)


def is_embedding_or_head(name: str) -> bool:
    return bool(_EMBEDDING_RE.search(name))


@dataclass(frozen=True)
class Policy:
    """How to choose a pipeline. ``codec`` is the lossy codec id, or "exact" for all-lossless."""

    codec: str = "exact"
    qp: int = 37
    preset: str | None = None
    bits: int = 10
    min_lossy_numel: int = 16384
    lossy_patterns: tuple[str, ...] = ()
    lossless_patterns: tuple[str, ...] = ()
    affine: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=dict)
    transform: str = "auto"
    #: token embeddings and output heads follow the size rule like other matrices (what a
    #: target sets: the RD allocation, not a name, then decides whether they stay exact)
    lossy_embeddings: bool = False
    #: tensor name -> the multipliers of a ``diagscale`` stage (``DiagScales``, or a pair
    #: ``(col_scale, row_scale)``, either None; normalised to ``DiagScales`` here): a tensor
    #: named here that goes lossy gets ``diagscale`` in front of its quantization stage,
    #: ``[diagscale, affine|blockdct, codec]``; one kept exact ignores it. For code (the
    #: activation-aware packer), not a CLI option; see ``codecs/diagscale.py`` for what the
    #: vectors mean (the factors decoding multiplies by, C and R entries).
    diagscale: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            scales = DiagScales.by_name(self.diagscale)
        except CodecError as exc:
            raise SourceError(str(exc)) from None
        object.__setattr__(self, "diagscale", scales)
        cls = final_codec(self.codec)
        if self.transform not in TRANSFORMS:
            raise SourceError(f"unknown transform {self.transform!r}; choose one of "
                              f"{', '.join(TRANSFORMS)}")
        if self.transform == "dct" and cls.takes_samples and not cls.accepts_dct:
            dct = [i for i, c in final_codecs().items() if c.accepts_dct]
            raise SourceError(f"transform dct is for the codecs that quantize a block DCT "
                              f"({', '.join(dct)}), not {self.codec}")

    @property
    def codec_class(self) -> type[ArrayBytesCodec]:
        """The final stage's class: what it can do decides the pipelines and the target rules."""
        return final_codec(self.codec)

    @property
    def per_tensor_scale(self) -> bool:
        """Whether each lossy tensor has one quantization scale (its QP then sets its step)."""
        return self.transform == "dct" or self.affine.get("granularity") == "tensor"

    def is_lossy(self, name: str, dtype: str, shape: Sequence[int]) -> bool:
        """Whether ``name`` goes through the lossy codec under this policy."""
        if not self.codec_class.takes_samples or dtype not in dtypes.FLOAT_DTYPES or len(shape) < 1:
            return False
        if any(fnmatch.fnmatchcase(name, p) for p in self.lossless_patterns):
            return False
        if any(fnmatch.fnmatchcase(name, p) for p in self.lossy_patterns):
            return True
        numel = 1
        for s in shape:
            numel *= s
        if len(shape) < 2 or numel < self.min_lossy_numel:
            return False
        return self.lossy_embeddings or not is_embedding_or_head(name)

    def pipeline(
        self, name: str, dtype: str, shape: Sequence[int], qp: int | None = None
    ) -> list[dict[str, Any]]:
        """The codec configs for one tensor (``qp`` overrides the policy's QP, e.g. from RD)."""
        cls = self.codec_class
        if not self.is_lossy(name, dtype, shape):  # a codec of samples leaves the rest to exact
            return [{"id": "exact" if cls.takes_samples else self.codec}]
        video: dict[str, Any] = {"id": self.codec, "bits": self.bits, **self.video}
        if cls.qp_range is not None:
            video["qp"] = self.qp if qp is None else qp
            if self.preset is not None:
                video["preset"] = self.preset
        scales = self.diagscale.get(name)
        front = [] if scales is None else [scales.stage_config()]
        if self.transform == "dct" and len(shape) >= 2:  # (a 1-D tensor named by --lossy:
            return [*front, {"id": QUANT_STAGES["dct"], "bits": self.bits}, video]  # affine, one row =
        return [*front, {"id": QUANT_STAGES["none"], "bits": self.bits, **self.affine}, video]  # per tensor)
