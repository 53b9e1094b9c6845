"""Validate the RD records an archive carries before anything computes with them.

The ``rd`` map of a tensor entry (samples, chosen QP, achieved figures) and the file's
``metadata.rd`` summary are informational for a reader, but ``repack`` allocates bits
from the samples and ``inspect`` does arithmetic on them. Unchecked, NaN samples made
``repack --bpw 3`` write a 0.887-bpw file and exit 0, and a QP of ``"x"`` or a sample of
two numbers crashed ``inspect --rd``. The rules (spec/FORMAT.md §6, ``rd``):

- ``samples``: a non-empty list of ``[qp, bpw, mse]``; ``qp`` an integer in the codec's
  QP range, distinct across samples (the curve interpolates between them); ``bpw`` and
  ``mse`` finite and >= 0;
- ``weighted_mse`` (activation-weighted MSE per sample): a list of finite numbers >= 0,
  one per sample;
- ``signal_energy``, ``mse``, ``bpw``, ``predicted_bpw``: finite and >= 0; ``rate_scale``
  finite and > 0; ``qp``/``chosen_qp`` integers in the QP range; ``snr_db`` a number, not
  NaN (+inf is a lossless tensor's).

Who does what with a bad record: ``repack`` refuses it (``FormatError`` naming the tensor:
re-targeting from made-up numbers would silently miss the target); ``inspect`` shows the
tensor's RD fields as unknown and says why, the rest of the table is still useful.
"""

from __future__ import annotations

import math
from typing import Any

from llmc_format.errors import CodecError, FormatError

_NON_NEGATIVE = ("signal_energy", "mse", "bpw", "predicted_bpw", "predicted_mse", "bytes")
_QP_KEYS = ("qp", "chosen_qp")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _non_negative(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v) and v >= 0


def rd_problem(rd: Any, qp_range: tuple[int, int]) -> str | None:
    """Why the tensor ``rd`` record is not usable, or None if it is (see module docstring)."""
    if rd is None:
        return None
    if not isinstance(rd, dict):
        return f"rd record is a {type(rd).__name__}, not a map"
    lo, hi = qp_range
    for key in _QP_KEYS:
        if key in rd and not (_is_int(rd[key]) and lo <= rd[key] <= hi):
            return f"{key} = {rd[key]!r:.40} is not an integer in [{lo}, {hi}]"
    for key in _NON_NEGATIVE:
        if key in rd and not _non_negative(rd[key]):
            return f"{key} = {rd[key]!r:.40} is not a finite number >= 0"
    if "rate_scale" in rd and not (_non_negative(rd["rate_scale"]) and rd["rate_scale"] > 0):
        return f"rate_scale = {rd['rate_scale']!r:.40} is not a finite number > 0"
    if "snr_db" in rd and not (_is_number(rd["snr_db"]) and not math.isnan(rd["snr_db"])):
        return f"snr_db = {rd['snr_db']!r:.40} is not a number"
    if "samples" in rd:
        problem = samples_problem(rd["samples"], qp_range)
        if problem is not None:
            return problem
    if "weighted_mse" in rd:
        w = rd["weighted_mse"]
        if not (isinstance(w, list) and all(_non_negative(v) for v in w)
                and len(w) == len(rd.get("samples") or [])):
            return "weighted_mse is not one finite number >= 0 per sample"
    return None


def samples_problem(samples: Any, qp_range: tuple[int, int]) -> str | None:
    """Why an RD ``samples`` list is not usable, or None."""
    lo, hi = qp_range
    if not isinstance(samples, list) or not samples:
        return "samples is not a non-empty list"
    seen: set[int] = set()
    for i, s in enumerate(samples):
        if not (isinstance(s, list) and len(s) == 3):
            return f"sample {i} is not [qp, bpw, mse]"
        q, b, m = s
        if not (_is_int(q) and lo <= q <= hi):
            return f"sample {i}: qp {q!r:.40} is not an integer in [{lo}, {hi}]"
        if q in seen:
            return f"sample {i}: qp {q} is sampled twice"
        seen.add(q)
        if not (_non_negative(b) and _non_negative(m)):
            return f"sample {i}: bpw {b!r:.40} / mse {m!r:.40} are not finite numbers >= 0"
    return None


def check_rd(rd: Any, qp_range: tuple[int, int], name: str) -> dict[str, Any]:
    """``rd`` if valid; ``FormatError`` naming the tensor otherwise."""
    problem = rd_problem(rd, qp_range)
    if problem is not None:
        raise FormatError(f"tensor {name!r}: invalid RD record: {problem}")
    return rd


def summary_problem(summary: Any) -> str | None:
    """Why the file's ``metadata.rd`` summary cannot be shown, or None."""
    if summary is None:
        return None
    if not isinstance(summary, dict):
        return f"metadata rd is a {type(summary).__name__}, not a map"
    target = summary.get("target")
    if not (isinstance(target, dict) and isinstance(target.get("kind"), str)
            and _is_number(target.get("value")) and math.isfinite(target["value"])):
        return "metadata rd target is not {kind: str, value: finite number}"
    lam = summary.get("lambda")
    if lam is not None and not (_is_number(lam) and not math.isnan(lam)):
        return f"metadata rd lambda = {lam!r:.40} is not a number"
    passes = summary.get("passes")
    if passes is not None and not (_is_int(passes) and passes >= 0):
        return f"metadata rd passes = {passes!r:.40} is not a count"
    return None


def qp_range_of(pipeline: Any) -> tuple[int, int]:
    """The QP range of the codec ending ``pipeline`` ((0, 63) if it has none or is unknown)."""
    from llmc_format.codecs.registry import get_codec_class

    last = pipeline[-1] if isinstance(pipeline, (list, tuple)) and pipeline else {}
    try:
        cls = get_codec_class(last.get("id") if isinstance(last, dict) else None)
    except CodecError:
        return (0, 63)
    qr = getattr(cls, "qp_range", None) or (0, 63)  # None: a codec without a QP
    return (int(qr[0]), int(qr[1]))
