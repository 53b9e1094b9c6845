"""Pack to a target — a file size, bits per weight, or a quality floor — by RD optimization.

1. **Measure** (``rd.sample``): each lossy tensor's rate and MSE at a few QPs, on a sample
   of its rows; exact tensors are encoded once to learn their size.
2. **Allocate** (``rd.allocate``): QPs minimizing total (weighted) squared error under the
   byte budget left after the fixed costs, by one Lagrange multiplier (bisection).
3. **Encode** everything once at the chosen QPs.
4. **Correct**: the full encode tells each tensor's real rate; curves are rescaled, the
   QPs re-allocated, and only the tensors whose QP changed are encoded again (the others
   are copied blob for blob from the previous pass). This repeats until the file lands in
   ``[target·(1 − tolerance), target]`` — never above unless ``allow_over``.

What the targets count (README "Targets"): ``size`` is the whole file. ``bpw`` is the
all-in bits per *lossy* weight: bitstreams, quantization parameters, index, header,
footer and padding, over the weights coded lossy; lossless tensors and attachments are
counted separately and reported. ``snr`` asks every lossy tensor to reach that SNR (dB).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArrayBytesCodec
from llmc_format.codecs.pipeline import is_lossless
from llmc_format.codecs.registry import final_codecs, get_codec
from llmc_format.container import layout
from llmc_format.container.reader import Reader
from llmc_format.errors import TargetError
from llmc_format.io.base import Source
from llmc_format.pipeline.pack import (
    encode_entry,
    pack_source,
    with_encoder_threads,
)
from llmc_format.pipeline.policy import Policy, final_codec
from llmc_format.rd.allocate import Allocation, allocate_rate, allocate_snr
from llmc_format.rd.model import RDCurve
from llmc_format.rd.records import check_rd
from llmc_format.rd.sample import SAMPLE_FRACTION, measure
from llmc_format.runtime import default_jobs
from llmc_format.units import parse_size

#: The QPs sampled per codec are the codec's ``sample_qps`` (span ~1.5–6 bits per weight
#: under per-row scaling); the allocator may extrapolate ``rd.allocate.EXTRAPOLATE`` QPs
#: beyond each tensor's samples. ``log_step`` codecs shift them per tensor (``sample_qps``).
#: The span of a per-row min-max range in standard deviations, roughly (the rows of
#: SmolLM2's and MiniLM's matrices: 6–9): what the built-in ``sample_qps`` were chosen for
ROW_RANGE_SIGMAS = 8.0
MAX_PASSES = 6



def target_codecs() -> list[str]:
    """The codecs a pack to a size, bits-per-weight or SNR target can use."""
    return [i for i, c in final_codecs().items() if c.sample_qps and c.qp_range]


Progress = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class Target:
    kind: str  # "size" | "bpw" | "snr"
    value: float
    tolerance: float = 0.02
    allow_over: bool = False

    @classmethod
    def parse(cls, *, size: str | None = None, bpw: float | None = None,
              snr: float | None = None, tolerance: float = 0.02, allow_over: bool = False) -> Target:
        given = [(k, v) for k, v in (("size", size), ("bpw", bpw), ("snr", snr)) if v is not None]
        if len(given) != 1:
            raise TargetError("give exactly one target: --size, --bpw or --snr")
        kind, value = given[0]
        if kind == "size":
            value = parse_size(str(value))
        if not (isinstance(value, (int, float)) and value > 0):
            raise TargetError(f"--{kind} must be positive, got {value!r}")
        return cls(kind, float(value), tolerance, allow_over)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "tolerance": self.tolerance,
                "allow_over": self.allow_over}


#: the largest model (in weights) ``weighting="auto"`` builds for self-calibration
AUTO_SELF_MAX_WEIGHTS = 2_000_000_000


def _auto_weights(source: Source, names: set[str]) -> tuple[dict[str, float] | None, str]:
    """Self-calibration when the model can be built here, else (None, why nmse)."""
    from llmc_format.errors import SourceError
    from llmc_format.rd.calibration import SELF, sensitivities

    total = sum(math.prod(e.shape) for _, e in source.tensors())
    if total > AUTO_SELF_MAX_WEIGHTS:
        return None, f"nmse (auto: {total:,} weights is too many to self-calibrate here)"
    try:
        return sensitivities(source, SELF, names=names), "calibration-self (auto)"
    except SourceError as exc:  # no config, not a causal LM transformers knows, other names
        return None, f"nmse (auto: {exc})"


def with_target_scaling(policy: Policy) -> Policy:
    """The policy a target packs with: one quantization scale per tensor.

    Why: once every tensor gets its own QP (what a target does), one scale per tensor gives
    every weight of it the same codec noise — the MSE-optimal split — and stores no
    per-row parameters: +0.9–1.0 dB over per-row scaling at equal rate on SmolLM2
    (docs/results/tuning.md §2). ``transform="auto"`` becomes ``dct`` (the ``blockdct``
    stage) for vvc and hevc: a further +0.2–0.4 dB at equal rate with vvc, and lower
    perplexity at 2.4–4 bits per weight (rd.md); with an affine granularity chosen, or
    another codec, it becomes ``none`` with per-tensor affine scaling unless chosen.
    """
    transform = policy.transform
    if transform == "auto":
        dct = "granularity" not in policy.affine and policy.codec_class.prefers_dct
        transform = "dct" if dct else "none"
    affine = dict(policy.affine)
    if transform == "none":
        affine.setdefault("granularity", "tensor")
    return dataclasses.replace(policy, transform=transform, affine=affine if transform == "none" else {})


def _qrange(codec: str) -> range:
    """The QPs codec ``codec`` takes (its class's ``qp_range``)."""
    qp_range = final_codec(codec).qp_range
    if qp_range is None:
        raise TargetError(f"codec {codec!r} takes no QP: nothing to allocate")
    return range(qp_range[0], qp_range[1] + 1)


def sample_qps(policy: Policy, array: np.ndarray) -> tuple[int, ...]:
    """The QPs to measure ``array`` at.

    Under per-tensor scaling a tensor's code step is set by its full range, which is 10 to
    40 standard deviations depending on its outliers, so one QP means very different rates
    across tensors (SmolLM2: the QPs of equal weight-unit steps span 25). Each tensor is
    therefore sampled at the codec's ``sample_qps`` shifted by 6·log2(8σ / range): the same quantizer
    steps relative to its spread as per-row scaling gets at them — the range of
    rates the allocator needs, for every tensor.
    """
    base = policy.codec_class.sample_qps
    if not policy.per_tensor_scale or not policy.codec_class.log_step:
        return base
    x = np.asarray(array).ravel()
    every = max(1, x.size >> 20)  # σ from ≤ 1 M evenly strided weights: no full-size copy
    sigma = float(np.std(x[::every], dtype=np.float64))
    if policy.transform == "dct" and np.ndim(array) >= 2:  # codes cover the inverse-DCT range
        from llmc_format.quant.blockdct import BlockDctCodec

        span = BlockDctCodec(bits=policy.bits).code_span(np.asarray(array))
    else:
        span = float(x.max()) - float(x.min())
    if not (span > 0 and sigma > 0 and math.isfinite(span)):
        return base
    shift = round(6 * math.log2(ROW_RANGE_SIGMAS * sigma / span))
    qrange = _qrange(policy.codec)
    return tuple(sorted({min(qrange[-1], max(qrange[0], q + shift)) for q in base}))


@dataclass
class Plan:
    curves: dict[str, RDCurve]
    params_bytes: dict[str, int]
    exact_bytes: int
    lossy_weights: int
    attachment_bytes: int
    n_blobs_est: int


def measure_source(source: Source, policy: Policy, jobs: int, fraction: float = SAMPLE_FRACTION,
                   progress: Progress | None = None) -> Plan:
    """Step 1: RD samples of the lossy tensors, exact sizes of the others."""
    items = list(source.tensors())
    policy = with_encoder_threads(policy, jobs)
    curves: dict[str, RDCurve] = {}
    params: dict[str, int] = {}
    exact_bytes = 0
    blobs = 0

    def work(item: tuple[str, Any]) -> tuple[str, Any]:
        name, entry = item
        if policy.is_lossy(name, entry.dtype, entry.shape):
            array = entry()
            m = measure(name, array, lambda q: policy.pipeline(name, entry.dtype, entry.shape, q),
                        sample_qps(policy, array), fraction)
            return name, m
        packed = encode_entry(name, entry, policy.pipeline(name, entry.dtype, entry.shape))
        return name, packed

    with ThreadPoolExecutor(jobs) as pool:
        for i, (name, result) in enumerate(pool.map(work, items)):
            if hasattr(result, "curve"):
                curves[name] = result.curve
                params[name] = result.params_bytes
                blobs += 1 + max(1, result.curve.numel >> 20)
            else:
                exact_bytes += sum(len(b) for _, b in result.encoded.blobs)
                blobs += len(result.encoded.blobs)
            if progress:
                progress("measure", name, i + 1, len(items))
    att = 0
    for _, data in source.attachments():
        att += len(data)
        blobs += 1
    return Plan(curves, params, exact_bytes, sum(c.numel for c in curves.values()), att, blobs)


def _lossy_video_bytes(reader: Reader, names: set[str]) -> dict[str, int]:
    out = {}
    for n in names:
        e = reader.tensor(n)
        last = len(e.pipeline) - 1
        out[n] = sum(b.length for b in e.blobs if b.stage == last)
    return out


def pack_to_target(
    source: Source,
    dst: str | os.PathLike[str],
    target: Target,
    *,
    policy: Policy,
    jobs: int | None = None,
    weighting: str = "auto",
    progress: Progress | None = None,
    plan: Plan | None = None,
    calibration: str | None = None,
    **pack_kwargs: Any,
) -> dict[str, Any]:
    """Pack ``source`` into ``dst`` meeting ``target``; returns the RD summary recorded.

    ``calibration`` (a text, or ``rd.calibration.SELF`` for text the model samples itself)
    replaces the data-free weighting by each tensor's mean squared loss gradient on that
    text (``rd.calibration``). ``weighting="auto"`` (the default) uses ``SELF`` when the
    source is a model transformers can build and has at most ``AUTO_SELF_MAX_WEIGHTS``
    weights (it is built in float32 on this machine), else ``nmse``; the summary's
    ``weighting`` says which ran, and why.
    """
    if not (policy.codec_class.sample_qps and policy.codec_class.qp_range):
        raise TargetError(f"size/quality targets need a lossy codec ({', '.join(target_codecs())}), "
                          f"not {policy.codec!r}")
    if weighting not in ("auto", "mse", "nmse"):
        raise TargetError(f"weighting must be 'auto', 'mse' or 'nmse', not {weighting!r}")
    jobs = jobs or default_jobs()
    policy = with_target_scaling(policy)
    plan = plan or measure_source(source, policy, jobs, progress=progress)
    if not plan.curves:
        raise TargetError("no tensor is lossy under this policy: nothing to optimize "
                          "(see --lossy / --min-lossy-numel)")
    qrange = _qrange(policy.codec)
    names = set(plan.curves)
    weights: dict[str, float] | None = None
    if calibration is None and weighting == "auto":
        weights, weighting = _auto_weights(source, names)
    elif calibration is not None:
        from llmc_format.rd.calibration import SELF, sensitivities

        weights = sensitivities(source, calibration, names=names)  # has every one of names
        weighting = "calibration-self" if calibration == SELF else "calibration"
    if weights is None:
        weights = {n: 1.0 if weighting == "mse" else c.numel / max(c.signal_energy, 1e-30)
                   for n, c in plan.curves.items()}
    dst = Path(dst)
    work_dir = dst.with_name(f".{dst.name}.rd")
    work_dir.mkdir(exist_ok=True)
    try:
        return _passes(source, dst, target, policy, jobs, plan, qrange, weights, weighting,
                       names, work_dir, progress, pack_kwargs)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _passes(source: Source, dst: Path, target: Target, policy: Policy, jobs: int, plan: Plan,
            qrange: range, weights: dict[str, float], weighting: str, names: set[str],
            work_dir: Path, progress: Progress | None, pack_kwargs: dict[str, Any]) -> dict[str, Any]:
    # every byte of the file that is not a lossy bitstream: estimated, then measured
    lossless = plan.exact_bytes + plan.attachment_bytes
    non_video = (layout.HEADER_SIZE + layout.FOOTER_SIZE + 64 * plan.n_blobs_est
                 + 600 * (len(plan.curves) + 8) + sum(plan.params_bytes.values()) + lossless)
    previous: Path | None = None
    prev_qps: dict[str, int] = {}
    summary: dict[str, Any] = {}
    ok, file_bytes = False, 0
    # the largest file under the target seen so far: the answer if no pass lands in the window
    best_under: Path | None = None
    best_under_bytes = 0
    best_summary: dict[str, Any] = {}
    for npass in range(1, MAX_PASSES + 1):
        if target.kind == "snr":
            alloc = allocate_snr(plan.curves, target.value, qrange)
            if prev_qps:  # tensors that missed the floor go one QP finer than before
                alloc.qps.update({n: min(alloc.qps[n], q) for n, q in prev_qps.items()})
        else:
            allowed = (target.value if target.kind == "size"
                       else target.value * plan.lossy_weights / 8 + lossless)
            safety = 1.0 - target.tolerance / 4  # aim inside the window, near its top
            alloc = allocate_rate(plan.curves, (allowed - non_video) * 8 * safety, qrange, weights)
        summary = _summary(target, alloc, weighting, npass)
        records = {n: {**plan.curves[n].to_dict(), "chosen_qp": alloc.qps[n],
                       "predicted_bpw": plan.curves[n].rate(alloc.qps[n]),
                       "predicted_mse": plan.curves[n].distortion(alloc.qps[n])} for n in names}
        out = work_dir / f"pass{npass}.llmc"
        reuse = Reader(previous) if previous else None
        unchanged = {n for n, q in alloc.qps.items() if prev_qps.get(n) == q}
        if reuse is not None:
            unchanged |= {e.name for e in reuse.index.tensors if e.name not in names}
        try:
            pack_source(source, out, policy=policy, jobs=jobs, qp_overrides=alloc.qps,
                        rd_records=records, extra_metadata={"rd": summary}, reuse=reuse,
                        reuse_names=unchanged,
                        progress=(lambda ev, n, d, t, k=npass: progress(f"pass {k}", n, d, t))
                        if progress else None, **pack_kwargs)
        finally:
            if reuse is not None:
                reuse.close()
        ok, file_bytes, lossless, video = _check(out, target, plan, names)
        under = target.kind != "snr" and _achieved_value(out, target, plan, names) <= target.value
        if previous is not None and previous != best_under:
            previous.unlink()
        if under and (best_under is None or file_bytes > best_under_bytes):
            if best_under is not None and best_under != previous:
                best_under.unlink()
            best_under, best_under_bytes, best_summary = out, file_bytes, summary
        previous, prev_qps = out, dict(alloc.qps)
        if ok:
            break
        # correct: real rate of each lossy tensor vs predicted at its QP; the real fixed costs
        for n, actual in video.items():
            c = plan.curves[n]
            predicted = c.rate(alloc.qps[n]) * c.numel / 8
            if predicted > 0 and actual > 0:
                c.rate_scale *= actual / predicted
        non_video = file_bytes - sum(video.values())
        if target.kind == "snr":
            with Reader(out) as r:
                prev_qps = {n: alloc.qps[n] - (1 if (r.tensor(n).rd or {}).get("snr_db", 0) < target.value
                                               else 0) for n in names}
    else:
        if best_under is not None:
            # integer QPs on few tensors may not reach the window: keep the closest file
            # under the target and say so
            previous, summary = best_under, best_summary
            summary["within_tolerance"] = False
        elif not ok:
            raise TargetError(f"could not meet the {target.kind} target {target.value:g} in "
                              f"{MAX_PASSES} passes (last file {file_bytes:,} bytes)")
    assert previous is not None
    os.replace(previous, dst)
    summary["achieved"] = _achieved(dst, names)
    return summary


def _summary(target: Target, alloc: Allocation, weighting: str, npass: int) -> dict[str, Any]:
    return {"target": target.describe(), "lambda": alloc.lam, "weighting": weighting,
            "passes": npass, "predicted_lossy_bits": alloc.predicted_bits}


def _check(path: Path, target: Target, plan: Plan, names: set[str]) -> tuple[bool, int, int, dict[str, int]]:
    """Whether ``path`` meets the target; its size, lossless bytes, lossy bitstream bytes."""
    with Reader(path) as r:
        file_bytes = r.file_size
        video = _lossy_video_bytes(r, names)
        lossless = sum(e.stored_bytes for e in r.index.tensors if e.name not in names)
        attachments = sum(a.blob.length for a in r.attachments())
        if target.kind == "snr":
            worst = min(float((r.tensor(n).rd or {}).get("snr_db", -np.inf)) for n in names)
            return worst >= target.value, file_bytes, lossless, video
    if target.kind == "size":
        achieved, goal = file_bytes, target.value
    else:
        achieved = 8 * (file_bytes - lossless - attachments) / plan.lossy_weights
        goal = target.value
    ceiling = goal * (1 + target.tolerance) if target.allow_over else goal
    return goal * (1 - target.tolerance) <= achieved <= ceiling, file_bytes, lossless + attachments, video


def _achieved_value(path: Path, target: Target, plan: Plan, names: set[str]) -> float:
    """The file's figure in the target's unit (bytes, or bits per lossy weight)."""
    a = _achieved(path, names)
    return a["file_bytes"] if target.kind == "size" else a["lossy_bpw_all_in"]


def _achieved(path: Path, names: set[str]) -> dict[str, Any]:
    with Reader(path) as r:
        lossy = [r.tensor(n) for n in names]
        lossy_weights = sum(e.numel for e in lossy)
        lossless = sum(e.stored_bytes for e in r.index.tensors if e.name not in names)
        attachments = sum(a.blob.length for a in r.attachments())
        snrs = [float(e.rd["snr_db"]) for e in lossy if e.rd and "snr_db" in e.rd]
        return {
            "file_bytes": r.file_size,
            "lossy_weights": lossy_weights,
            "lossy_bpw_all_in": 8 * (r.file_size - lossless - attachments) / max(lossy_weights, 1),
            "lossless_tensor_bytes": lossless,
            "attachment_bytes": attachments,
            "min_snr_db": min(snrs) if snrs else None,
        }


def repack(src: str | os.PathLike[str], dst: str | os.PathLike[str], target: Target, *,
           jobs: int | None = None, weighting: str = "nmse",
           progress: Progress | None = None) -> dict[str, Any]:
    """Re-encode a lossy archive to a new target without the original model.

    The lossy tensors are decoded and encoded again (transcoded) at QPs chosen from the RD
    samples recorded in the archive, with each sample's MSE raised by the error the
    archive already carries; tensors without recorded samples are measured afresh.
    Lossless tensors and attachments are carried over unchanged.
    """
    from llmc_format.io.archive_source import ArchiveSource

    with ArchiveSource(src) as source:
        entries = [e for e in source.reader.index.tensors if e.alias_of is None]
        lossy = [e for e in entries if not is_lossless(e.pipeline)]
        if not lossy:
            raise TargetError(f"{src} holds no lossy tensor: nothing to re-target")
        # the archive's codec, scaling and transform (its RD samples were measured with
        # them), taken from configs the codecs themselves validate, never used raw
        where = f"tensor {lossy[0].name!r}"
        video = get_codec(lossy[0].pipeline[-1], where)
        affine = get_codec(lossy[0].pipeline[0], where)
        if not (isinstance(video, ArrayBytesCodec) and video.sample_qps and video.qp_range):
            raise TargetError(f"{src}: {where} is not coded by a codec a target can drive "
                              f"({video.codec_id}; those are {', '.join(target_codecs())}): "
                              f"nothing to re-target")
        dct = affine.codec_id == "blockdct"
        policy = Policy(codec=video.codec_id, preset=video.params.get("preset"),
                        bits=int(affine.params.get("bits", 10)), min_lossy_numel=2**62,
                        affine={} if dct else
                        {"granularity": str(affine.params.get("granularity", "row"))},
                        transform="dct" if dct else "none",
                        lossy_patterns=tuple(_glob_escape(e.name) for e in lossy))
        qrange = _qrange(video.codec_id)
        for e in lossy:  # NaN samples once made --bpw 3 write 0.887 bpw and exit 0
            check_rd(e.rd, (qrange[0], qrange[-1]), e.name)
        plan = None
        if all(e.rd and "samples" in e.rd and "mse" in e.rd for e in lossy):
            curves = {}
            for e in lossy:
                c = RDCurve.from_dict(e.rd, e.numel)
                c.mse = [m + float(e.rd["mse"]) for m in c.mse]  # transcoding adds to it
                curves[e.name] = c
            params = {e.name: sum(b.length for b in e.blobs if b.stage < len(e.pipeline) - 1)
                      for e in lossy}
            exact = sum(e.stored_bytes for e in entries if is_lossless(e.pipeline))
            att = sum(a.size for a in source.reader.attachments())
            plan = Plan(curves, params, exact, sum(e.numel for e in lossy), att,
                        sum(len(e.blobs) for e in entries) + 8)
        summary = pack_to_target(source, dst, target, policy=policy, jobs=jobs,
                                 weighting=weighting, progress=progress, plan=plan)
    summary["repacked_from"] = Path(src).name
    return summary


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
