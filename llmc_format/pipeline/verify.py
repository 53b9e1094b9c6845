"""verify: check every byte of an archive, decode every tensor, optionally compare to the source.

The report says, per tensor, whether it is intact — so a user of a damaged file knows
which tensors can still be salvaged (``safe_open(..., verify_checksums=False)`` or
reading the intact ones).

``strict=True`` also holds every stored video blob to the bitstream rules and decodes it
with each installed second decoder (``bitstreams.py``): a blob FFmpeg decodes but another
conforming decoder rejects is a problem too (``llmc repack --repair`` fixes the known
kind).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmc_format.codecs.stages import is_lossless
from llmc_format.container import layout
from llmc_format.container.index import unpack_index_bytes
from llmc_format.container.reader import Reader
from llmc_format.decode import read_tensor
from llmc_format.errors import LlmcError
from llmc_format.metrics import distortion, versus_original

#: recomputed SNR may differ from the recorded one by this much (dB) before it is flagged
SNR_TOLERANCE_DB = 0.01
#: a repacked tensor's SNR against the original is an estimate (``metrics.
#: versus_original``: independent errors add); it may miss by this much (dB)
ESTIMATE_TOLERANCE_DB = 1.0


@dataclass
class TensorCheck:
    name: str
    ok: bool
    problem: str | None = None
    lossless: bool | None = None
    snr_db_recorded: float | None = None
    snr_db_measured: float | None = None
    #: what a failed check means: "damaged" (bytes or decode wrong) or "mismatch" (the
    #: tensor is intact but does not match the --against source within its recorded error)
    kind: str | None = None
    #: the SNR the archive leads to expect against the source (recorded, or estimated
    #: for a repacked tensor) and whether it is an estimate
    snr_db_expected: float | None = None
    estimate: bool = False


    #: ``strict``: the problems of its video blobs (bitstream rules, second decoders)
    bitstream_problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    path: str
    ok: bool = True
    file_problems: list[str] = field(default_factory=list)
    tensors: list[TensorCheck] = field(default_factory=list)
    attachments_checked: int = 0
    against: str | None = None
    #: the signature checked valid, when one was asked for (``llmc verify --signature``)
    signature: str | None = None
    strict: bool = False
    #: ``strict``: per codec, the second decoders used (empty: none installed) and the
    #: video blobs checked / agreed with by every second decoder
    second_decoders: dict[str, list[str]] = field(default_factory=dict)
    video_blobs_checked: int = 0
    video_blobs_failed: int = 0

    def fail(self, problem: str) -> None:
        self.ok = False
        self.file_problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for t in d["tensors"]:
            for k in ("snr_db_recorded", "snr_db_measured", "snr_db_expected"):
                if isinstance(t[k], float) and not math.isfinite(t[k]):
                    t[k] = str(t[k])
        return d

    @property
    def intact(self) -> list[str]:
        return [t.name for t in self.tensors if t.ok]


def _check_history(r: Reader, report: VerifyReport) -> None:
    """Walk superseded indexes (metadata updates, FORMAT.md §9): each one's checksum, a
    footer right after it repeating its offset, length and checksum, zero padding to the
    next aligned record, msgpack without extensions or duplicate keys, and the chain
    ending exactly at ``data_end``. Their other content is history, not interpreted."""
    prev = r.index.previous
    end = r.footer.index_offset
    seen = 0
    while prev is not None:
        seen += 1
        if seen > layout.MAX_UPDATE_CHAIN:
            report.fail("metadata update chain is too long (loop?)")
            return
        try:
            raw = r.read_range(prev.index_offset, prev.index_length)
            if layout.checksum(raw) != prev.index_checksum:
                report.fail(f"superseded index at offset {prev.index_offset}: checksum mismatch")
                return
            footer_at = prev.index_offset + prev.index_length
            footer = layout.Footer.unpack(r.read_range(footer_at, layout.FOOTER_SIZE), footer_at)
            if (footer.index_offset, footer.index_length, footer.index_checksum) != (
                    prev.index_offset, prev.index_length, prev.index_checksum):
                report.fail(f"superseded footer at offset {footer_at} does not match its index")
            gap_start = footer_at + layout.FOOTER_SIZE
            if layout.align_up(gap_start, r.header.alignment) != end or any(
                    r.read_range(gap_start, end - gap_start)):
                report.fail(f"bytes {gap_start}..{end} between index records are not the "
                            "zero padding to the next aligned offset")
            obj = unpack_index_bytes(raw)  # same msgpack rules as the current index
            if not isinstance(obj, dict):
                report.fail(f"superseded index at offset {prev.index_offset} is not a map")
                return
            end = prev.index_offset
            p = obj.get("previous")
            prev = None if p is None else type(r.index.previous)(  # type: ignore[misc]
                p["index_offset"], p["index_length"], p["index_checksum"])
        except (LlmcError, KeyError, TypeError) as exc:
            report.fail(f"superseded index chain: {exc}")
            return
    if end != r.index.data_end:
        report.fail(f"bytes {r.index.data_end}..{end} after the data region are not covered")


def verify(
    path: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    strict: bool = False,
) -> VerifyReport:
    """Check ``path`` completely; compare with the source model ``against`` if given."""
    report = VerifyReport(str(path), against=str(against) if against else None,
                          strict=strict)
    try:
        reader = Reader(path)
    except LlmcError as exc:
        report.fail(str(exc))
        return report
    source_items: dict[str, Callable[[], np.ndarray]] = {}
    if against is not None:
        from llmc_format.io import open_source

        try:
            source = open_source(against)
            source_items = {it[0]: it[1] for it in source.tensors()}
            # a tied name (a GGUF's lm_head, a checkpoint's shared tensor) is the source's
            # alias, not one of its tensors: it is checked against the data it names
            for alias, target in source.aliases().items():
                if target in source_items:
                    source_items.setdefault(alias, source_items[target])
        except LlmcError as exc:
            report.fail(f"cannot read --against source: {exc}")
            return report
    with reader as r:
        _check_history(r, report)
        for a in r.attachments():
            try:
                r.read_attachment(a.name)
                report.attachments_checked += 1
            except LlmcError as exc:
                report.fail(str(exc))
        entries = r.index.tensors
        # without a source, an alias's check is its target's: each stored tensor is decoded
        # once however many aliases name it (20,000 aliases took minutes otherwise)
        by_target: dict[str, TensorCheck] = {}
        for i, entry in enumerate(entries):
            target = entry.alias_of or entry.name
            if against is None and target in by_target:
                check = dataclasses.replace(by_target[target], name=entry.name)
            else:
                check = _check_tensor(r, entry.name, source_items.get(entry.name),
                                      against is not None)
                if strict and (against is None or entry.alias_of is None):  # once per target
                    _check_bitstreams(r, entry.name, check, report)
                if against is None:
                    by_target[target] = check
            report.tensors.append(check)
            if not check.ok:
                report.ok = False
            if progress:
                progress(entry.name, i + 1, len(entries))
    return report


def _db(v: float | None) -> str:
    return "no SNR" if v is None else f"{v:.2f} dB"


def _check_bitstreams(r: Reader, name: str, check: TensorCheck, report: VerifyReport) -> None:
    from llmc_format.pipeline.bitstreams import check_tensor

    try:
        blobs, decoders = check_tensor(r, name)
    except LlmcError as exc:
        blobs, decoders = [], []
        check.bitstream_problems.append(str(exc))
    for b in blobs:
        report.second_decoders.setdefault(b.codec, decoders)
        report.video_blobs_checked += 1
        if not b.ok:
            report.video_blobs_failed += 1
            check.bitstream_problems.extend(b.problems)
    if check.bitstream_problems:
        check.ok = False
        check.problem = check.problem or check.bitstream_problems[0]


def _check_tensor(r: Reader, name: str, source: Callable[[], np.ndarray] | None,
                  compare: bool) -> TensorCheck:
    entry = r.resolve(name)
    lossless = is_lossless(entry.pipeline)
    check = TensorCheck(name, True, lossless=lossless)
    if entry.rd and isinstance(entry.rd.get("snr_db"), (int, float)):
        check.snr_db_recorded = float(entry.rd["snr_db"])
    try:
        decoded = read_tensor(r, name)  # a whole tensor: also checks digest.decoded
    except LlmcError as exc:
        check.ok, check.problem, check.kind = False, str(exc), "damaged"
        return check
    if compare:
        check.kind = "mismatch"  # from here on the tensor itself is intact
        if source is None:
            check.ok, check.problem = False, "tensor is not in the --against source"
            return check
        src = np.asarray(order="C", a=source())
        if src.shape != decoded.shape:
            check.ok, check.problem = False, f"source shape {list(src.shape)} != {list(decoded.shape)}"
        elif lossless:
            if src.dtype != decoded.dtype or src.tobytes() != decoded.tobytes():
                check.ok, check.problem = False, "not bit-identical to the source"
        else:
            check.snr_db_measured = got_snr = distortion(src, decoded)["snr_db"]
            estimate = versus_original(entry.rd or {})
            if estimate is not None and "snr_db" in estimate:  # repacked: vs the original
                expected, tol, check.estimate = estimate["snr_db"], ESTIMATE_TOLERANCE_DB, True
            else:
                expected, tol = check.snr_db_recorded, SNR_TOLERANCE_DB
            check.snr_db_expected = expected
            if expected is None or not (
                (math.isinf(expected) and math.isinf(got_snr)) or abs(expected - got_snr) <= tol
            ):
                check.ok = False
                what = "estimated" if check.estimate else "recorded"
                check.problem = (f"intact, but its SNR against this source is {got_snr:.2f} dB "
                                 f"where the archive's {what} error gives {_db(expected)}: "
                                 "not made from this source")
    if check.ok:
        check.kind = None
    return check
