"""Pack to a target — a file size, bits per weight, or a quality floor — by RD optimization.

1. **Measure** (``rd.sample``): each candidate tensor's rate and MSE at a few QPs, on a
   sample of its rows, and its size kept exact in its source encoding (``exact_bytes``);
   the other tensors are encoded once (exact) to learn their size.
2. **Allocate** (``rd.allocate``): per candidate a QP, or exact (zero error at its source
   encoding's rate), minimizing total (weighted) squared error under the byte budget left
   after the fixed costs, by one Lagrange multiplier (bisection). A tensor held at the
   finest QP its samples allow while its exact storage costs much more (SmolLM2's Q8_0
   embedding near its exact size) is sampled at finer QPs — down to the codec's lowest,
   or the finest it codes — and the allocation runs again (``extend_capped``).
3. **Encode** everything once at the chosen QPs.
4. **Correct**: the full encode tells each tensor's real rate; curves are rescaled, the
   QPs re-allocated, and only the tensors whose QP changed are encoded again (the others
   are copied blob for blob from the previous pass). This repeats until the file lands in
   ``[target·(1 − tolerance), target]`` — never above unless ``allow_over``.

The candidates are every tensor the policy would code lossy under a target: every
floating-point matrix of at least ``min_lossy_numel`` weights, token embeddings and output
heads included (``Policy.lossy_embeddings``), less those ``--lossless`` pins. So a target at
or above the source's own size keeps everything exact, and a tight one mixes exact and
lossy tensors.

What the targets count (README "Targets"): ``size`` is the whole file. ``bpw`` is the
all-in bits per weight of the candidates (the weights whose rate the allocation decides,
lossy or kept exact): their bitstreams, quantization parameters and exact blobs, plus the
index, header, footer and padding, over their weight count; the tensors outside the
allocation (norms, biases, small or pinned tensors) and the attachments are counted
separately and reported, and so is the whole file per weight of the whole model.
``snr`` asks every lossy tensor to reach that SNR (dB); exact ones have no error.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArrayBytesCodec
from llmc_format.codecs.registry import final_codecs, get_codec
from llmc_format.codecs.stages import is_lossless
from llmc_format.container import layout
from llmc_format.container.reader import Reader
from llmc_format.errors import CodecError, TargetError
from llmc_format.io.base import Source, SourceTensor
from llmc_format.outfiles import (
    OutputLock,
    check_output_file,
    check_outside_source,
    check_still_new,
    temp_dir,
)
from llmc_format.pipeline.pack import (
    encode_entry,
    encode_one,
    native_pipeline,
    pack_source,
    with_encoder_threads,
)
from llmc_format.pipeline.policy import QUANT_STAGES, Policy, final_codec, transform_of
from llmc_format.rd.activation import ALPHA, CLIP, weights_from_multipliers
from llmc_format.rd.allocate import (
    EXTRAPOLATE,
    Allocation,
    allocate_rate,
    allocate_snr,
    min_bits,
)
from llmc_format.rd.calibration import Statistics
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


def _auto_statistics(source: Source, names: set[str], progress: Progress | None = None
                     ) -> tuple[Statistics | None, str]:
    """Self-calibration when the model can be built here, else (None, why nmse)."""
    from llmc_format.errors import SourceError
    from llmc_format.rd.calibration import SELF, statistics

    total = sum(math.prod(e.shape) for _, e in source.tensors())
    if total > AUTO_SELF_MAX_WEIGHTS:
        return None, f"nmse (auto: {total:,} weights is too many to self-calibrate here)"
    try:
        return (statistics(source, SELF, names=names, progress=progress),
                "calibration-self (auto)")
    except SourceError as exc:  # no config, not a causal LM transformers knows, other names
        return None, f"nmse (auto: {exc})"


def activation_policy(policy: Policy, stats: Statistics | None,
                      shapes: Mapping[str, tuple[int, ...]], alpha: float | None = ALPHA
                      ) -> tuple[Policy, dict[str, np.ndarray]]:
    """The policy and RD column weights of an activation-aware target pack (``rd.activation``).

    For every candidate in ``shapes`` whose layer input power ``stats`` measured, the
    policy gets a ``diagscale`` stage with column multipliers (E[x_j²]/mean)^−α, and its RD
    samples get the column weights u_j = E[x_j²]/mean (their distortion is then the
    activation-weighted MSE). ``alpha`` None, or no statistics: ``policy`` unchanged, no
    weights (the per-tensor weighting of before); 0: the weights without the stage.
    A caller measuring the RD samples itself (``measure_source``, then ``plan=``) calls
    this with the statistics it passes as ``sensitivity`` and measures with what it returns.
    """
    if stats is None or alpha is None or not stats.input_power:
        return policy, {}
    from llmc_format.rd.activation import plan_for

    scales, weights = plan_for(stats.input_power, shapes, shapes, alpha)
    if scales:
        policy = dataclasses.replace(policy, diagscale={**policy.diagscale, **scales})
    return policy, weights


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
    return dataclasses.replace(policy, transform=transform, affine=affine if transform == "none" else {},
                               lossy_embeddings=True)


def pinned_exact(policy: Policy, names: set[str] | frozenset[str]) -> Policy:
    """``policy`` with the tensors ``names`` kept exact (the allocation chose so)."""
    if not names:
        return policy
    return dataclasses.replace(policy, lossless_patterns=(
        *policy.lossless_patterns, *(_glob_escape(n) for n in sorted(names))))


def exact_bytes(name: str, entry: SourceTensor, policy: Policy,
                array: np.ndarray | None = None) -> int:
    """The bytes ``name`` takes kept exact, as a pack with this policy keeps it.

    This is the rate of the allocation's exact choice (zero error): the tensor goes
    through the very pipeline ``pack_source`` gives an exact tensor, so when the source's
    native encoding is stored as it came (a GGUF's ggml blocks, bf16 through the exact
    codec), this is that encoding's size. ``array``: the tensor, if already read.
    """
    pipeline = pinned_exact(policy, {name}).pipeline(name, entry.dtype, entry.shape)
    if array is not None and native_pipeline(entry, pipeline) is None:
        packed = encode_one(name, array, pipeline)  # the values as read: not read again
    else:
        packed = encode_entry(name, entry, pipeline)
    return sum(len(b) for _, b in packed.encoded.blobs)


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
    """What the allocation works from: per candidate its RD curve, the bytes of its
    quantization parameters and (``exact_options``) of its exact storage; the rest in
    totals. ``exact_bytes`` counts the tensors outside the allocation; ``lossy_weights``
    the candidates' weights (what ``bpw`` divides by)."""

    curves: dict[str, RDCurve]
    params_bytes: dict[str, int]
    exact_bytes: int
    lossy_weights: int
    attachment_bytes: int
    n_blobs_est: int
    exact_options: dict[str, int] = dataclasses.field(default_factory=dict)
    #: per lossy tensor, facts recorded in its ``rd`` as they are (repack: ``prior_mse``,
    #: ``original_energy``; see ``metrics.versus_original``)
    carried: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: per tensor, the lowest QP it may take: the codec failed finer (on its RD sample, or
    #: in a full encode: ``_passes``)
    floors: dict[str, int] = dataclasses.field(default_factory=dict)
    #: the tensors whose samples were extended toward finer QPs (``extend_capped``)
    extended: set[str] = dataclasses.field(default_factory=set)
    #: per candidate, the column weights its samples' activation-weighted MSE was measured
    #: with (``measure_source``'s ``col_weights``): finer samples use the same ones
    col_weights: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def measure_source(source: Source, policy: Policy, jobs: int, fraction: float = SAMPLE_FRACTION,
                   progress: Progress | None = None,
                   col_weights: Mapping[str, np.ndarray] | None = None) -> Plan:
    """Step 1: RD samples and exact sizes of the candidates, exact sizes of the others.

    ``col_weights``: per candidate, the column weights of its activation-weighted MSE
    (``activation_policy``); the samples of the others measure the plain MSE only."""
    col_weights = col_weights or {}
    items = list(source.tensors())
    policy = with_encoder_threads(policy, jobs)
    curves: dict[str, RDCurve] = {}
    params: dict[str, int] = {}
    exact_options: dict[str, int] = {}
    fixed_exact = 0
    blobs = 0

    def work(item: tuple[str, Any]) -> tuple[str, Any]:
        name, entry = item
        if policy.is_lossy(name, entry.dtype, entry.shape):
            array = entry()
            scales = policy.diagscale.get(name)  # the codes cover the scaled values' range
            qps = sample_qps(policy, array if scales is None else scales.apply(array))
            m = measure(name, array, lambda q: policy.pipeline(name, entry.dtype, entry.shape, q),
                        qps, fraction, col_weights.get(name))
            return name, (m, exact_bytes(name, entry, policy, array))
        packed = encode_entry(name, entry, policy.pipeline(name, entry.dtype, entry.shape))
        return name, packed

    if progress:
        progress("sampling", "", 0, len(items))
    with ThreadPoolExecutor(jobs) as pool:
        for i, (name, result) in enumerate(pool.map(work, items)):
            if isinstance(result, tuple):
                measured, exact_options[name] = result
                curves[name] = measured.curve
                params[name] = measured.params_bytes
                blobs += 1 + max(1, measured.curve.numel >> 20)
            else:
                fixed_exact += sum(len(b) for _, b in result.encoded.blobs)
                blobs += len(result.encoded.blobs)
            if progress:
                progress("sampling", name, i + 1, len(items))
    att = 0
    for _, data in source.attachments():
        att += _attachment_bytes(data)  # as stored (zstd when smaller), not the raw length
        blobs += 1
    return Plan(curves, params, fixed_exact, sum(c.numel for c in curves.values()), att, blobs,
                exact_options, col_weights=dict(col_weights))


def _stored_bytes(reader: Reader, names: set[str]) -> dict[str, tuple[int, int]]:
    """Per tensor: (bytes of its last stage's blobs — the bitstream of a lossy tensor —,
    bytes of all its blobs)."""
    out = {}
    for n in names:
        e = reader.tensor(n)
        last = len(e.pipeline) - 1
        out[n] = (sum(b.length for b in e.blobs if b.stage == last), e.stored_bytes)
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
    sensitivity: Mapping[str, float] | Statistics | None = None,
    activation_alpha: float | None = ALPHA,
    activation: Mapping[str, Any] | None = None,
    new: bool | None = None,
    **pack_kwargs: Any,
) -> dict[str, Any]:
    """Pack ``source`` into ``dst`` meeting ``target``; returns the RD summary recorded.

    ``new``: ``dst`` did not exist when the command began (None: whether it exists now);
    then it is not replaced if another process creates it meanwhile
    (``outfiles.check_still_new``).

    ``calibration`` (a text, or ``rd.calibration.SELF`` for text the model samples itself)
    replaces the data-free weighting by each tensor's mean squared loss gradient on that
    text (``rd.calibration``). ``weighting="auto"`` (the default) uses ``SELF`` when the
    source is a model transformers can build and has at most ``AUTO_SELF_MAX_WEIGHTS``
    weights (it is built in float32 on this machine), else ``nmse``; the summary's
    ``weighting`` says which ran, and why. ``sensitivity``: the sensitivities
    ``rd.calibration.sensitivities`` computed for ``calibration`` (or ``SELF`` when
    ``calibration`` is None) beforehand, by a caller packing one source to several targets
    (they depend on the source and text only); used instead of computing them again —
    or the ``rd.calibration.Statistics`` of ``statistics`` for that text.

    Activation-aware coding (``rd.activation``; ``activation_alpha``, default
    ``rd.activation.ALPHA``): when calibration statistics are at hand (``auto`` on a
    buildable model, ``calibration``, or ``sensitivity`` given as ``Statistics``), each
    ``nn.Linear`` weight is coded through a ``diagscale`` stage with column multipliers
    from its inputs' second moments, and the allocator minimizes the activation-weighted
    MSE (``activation_policy``). None turns it off (per-tensor weighting only); a caller
    giving ``plan`` must have measured it with ``activation_policy``'s policy and weights.
    ``activation``: what the summary's ``activation`` records when the caller brought the
    multipliers itself (``policy.diagscale``) and measured ``plan`` accordingly (``repack``).
    """
    check_outside_source(Path(dst), source.path)  # before measuring anything
    check_output_file(Path(dst))
    new = not os.path.lexists(dst) if new is None else new
    if not (policy.codec_class.sample_qps and policy.codec_class.qp_range):
        raise TargetError(f"size/quality targets need a lossy codec ({', '.join(target_codecs())}), "
                          f"not {policy.codec!r}")
    if weighting not in ("auto", "mse", "nmse"):
        raise TargetError(f"weighting must be 'auto', 'mse' or 'nmse', not {weighting!r}")
    jobs = jobs or default_jobs()
    policy = with_target_scaling(policy)
    if plan is None:
        whole = pack_exact_if_it_fits(source, dst, target, policy=policy, jobs=jobs,
                                      progress=progress, new=new, **pack_kwargs)
        if whole is not None:
            return whole
    # the candidates (read from the plan when given; else their entries, no data read)
    given = None if plan is None else set(plan.curves)
    shapes = {n: tuple(e.shape) for n, e in source.tensors()
              if (policy.is_lossy(n, e.dtype, e.shape) if given is None else n in given)}
    if not shapes:
        raise TargetError("no tensor is lossy under this policy: nothing to optimize "
                          "(see --lossy / --min-lossy-numel)")
    names = set(shapes)
    # the weighting first: the activation-aware stage and samples depend on its statistics
    stats: Statistics | None = None
    sens: Mapping[str, float] | None = None
    if sensitivity is not None:
        stats = sensitivity if isinstance(sensitivity, Statistics) else None
        sens = stats.sensitivity if stats is not None else sensitivity
        missing = sorted(names - set(sens))
        if missing:
            raise TargetError(f"the given sensitivities lack tensor {missing[0]!r}")
        from llmc_format.rd.calibration import SELF

        weighting = "calibration" if calibration not in (None, SELF) else "calibration-self"
    elif calibration is None and weighting == "auto":
        stats, weighting = _auto_statistics(source, names, progress)
    elif calibration is not None:
        from llmc_format.rd.calibration import SELF, statistics

        stats = statistics(source, calibration, names=names,  # has every one of names
                           progress=progress)
        weighting = "calibration-self" if calibration == SELF else "calibration"
    if stats is not None:
        sens = stats.sensitivity
    policy, col_weights = activation_policy(policy, stats, shapes, activation_alpha)
    plan = plan or measure_source(source, policy, jobs, progress=progress,
                                  col_weights=col_weights)
    if not plan.curves:
        raise TargetError("no tensor is lossy under this policy: nothing to optimize "
                          "(see --lossy / --min-lossy-numel)")
    qrange = _qrange(policy.codec)
    names = set(plan.curves)
    weights: dict[str, float] | None = None
    if sens is not None:
        weights = {n: float(sens[n]) for n in names}
    note = {"activation": {"alpha": activation_alpha, "clip": CLIP, "tensors": len(col_weights),
                           "distortion": "activation-weighted MSE (rd.activation)"}
            } if col_weights else {}
    if activation is not None:
        note = {"activation": dict(activation)}
    if weights is None:
        weights = {n: 1.0 if weighting == "mse" else c.numel / max(c.signal_energy, 1e-30)
                   for n, c in plan.curves.items()}
    _refuse_impossible(target, plan, qrange)
    dst = Path(dst)
    with OutputLock(dst):  # a second writer of dst fails at once; passes go to a private dir
        work_dir = temp_dir(dst, ".rd")
        try:
            return _passes(source, dst, target, policy, jobs, plan, qrange, weights, weighting,
                           names, work_dir, progress, pack_kwargs, new, note,
                           {**col_weights, **plan.col_weights})
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)


def pack_exact_if_it_fits(source: Source, dst: str | os.PathLike[str], target: Target, *,
                          policy: Policy, jobs: int | None = None,
                          progress: Progress | None = None, new: bool = False,
                          **pack_kwargs: Any) -> dict[str, Any] | None:
    """Keep every tensor exact when that meets a size or bpw target; None if it does not.

    Exact storage is every candidate's zero-error choice, so when the whole model kept
    exact (in its source encoding) fits, it is the allocation's answer — found here
    without RD samples or calibration. The exact sizes are added up tensor by tensor and
    the search stops as soon as the budget is exceeded; only a fitting model is packed.
    """
    if target.kind == "snr":
        return None
    policy = with_target_scaling(policy)
    jobs = jobs or default_jobs()
    items = list(source.tensors())
    names = {n for n, e in items if policy.is_lossy(n, e.dtype, e.shape)}
    if not names:
        return None
    att = sum(_attachment_bytes(data) for _, data in source.attachments())
    index = layout.HEADER_SIZE + layout.FOOTER_SIZE + 600 * (len(items) + 8) + 64 * len(items)
    weights = sum(math.prod(e.shape) for n, e in items if n in names)
    total = index + (att if target.kind == "size" else 0)
    budget = target.value if target.kind == "size" else target.value * weights / 8

    def size(item: tuple[str, SourceTensor]) -> int:
        n, e = item
        if n in names:
            return exact_bytes(n, e, policy)
        packed = encode_entry(n, e, policy.pipeline(n, e.dtype, e.shape))
        return sum(len(b) for _, b in packed.encoded.blobs) if target.kind == "size" else 0

    with ThreadPoolExecutor(jobs) as pool:
        for nbytes in pool.map(size, items):
            total += nbytes
            if total > budget:
                return None  # (the pool finishes the tensors already started)
    dst = Path(dst)
    # a private directory of a unique name (0700, created exclusively) holds the pack until
    # it is renamed over dst: no fixed name another process could pre-create or race on
    private = temp_dir(dst, ".exact")
    tmp = private / dst.name
    try:
        return _publish_exact(source, dst, tmp, target, names, policy=policy, jobs=jobs,
                              progress=progress, new=new, **pack_kwargs)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _publish_exact(source: Source, dst: Path, tmp: Path, target: Target, names: set[str], *,
                   policy: Policy, jobs: int, progress: Progress | None, new: bool,
                   **pack_kwargs: Any) -> dict[str, Any] | None:
    """Pack every candidate exact into ``tmp`` and rename it over ``dst`` if it meets the
    target (None, and nothing renamed, when the index estimate was short)."""
    summary: dict[str, Any] = {"target": target.describe(), "lambda": None,
                               "weighting": "none (every candidate fits exact)", "passes": 1,
                               "predicted_lossy_bits": 0.0, "kept_exact": sorted(names)}
    pack_source(source, tmp, policy=pinned_exact(policy, names), jobs=jobs,
                rd_records={n: {"kept_exact": True} for n in names},
                extra_metadata={"rd": summary},
                progress=(lambda ev, n, d, t: progress("exact", n, d, t)) if progress else None,
                **pack_kwargs)
    achieved = _achieved(tmp, names)
    value = achieved["file_bytes"] if target.kind == "size" else achieved["rd_bpw_all_in"]
    if value > target.value:  # the estimate of the index was short: allocate after all
        return None
    if value < target.value * (1 - target.tolerance):
        summary["within_tolerance"] = False
    with OutputLock(dst):  # a pack or repack writing dst meanwhile: fail, do not interleave
        check_output_file(dst)
        check_still_new(dst, new)
        os.replace(tmp, dst)
    summary["achieved"] = achieved
    return summary


def _attachment_bytes(data: bytes) -> int:
    """What the writer stores of an attachment: zstd-compressed when that is smaller."""
    import zstandard

    from llmc_format.container.writer import ATTACHMENT_ZSTD_LEVEL

    return min(len(data), len(zstandard.ZstdCompressor(level=ATTACHMENT_ZSTD_LEVEL).compress(data)))


def _non_video_estimate(plan: Plan) -> float:
    """Every byte of the file that is not a lossy bitstream, as estimated before encoding."""
    return (layout.HEADER_SIZE + layout.FOOTER_SIZE + 64 * plan.n_blobs_est
            + 600 * (len(plan.curves) + 8) + sum(plan.params_bytes.values())
            + plan.exact_bytes + plan.attachment_bytes)


def _refuse_impossible(target: Target, plan: Plan, qrange: range) -> None:
    """Refuse a size or bpw target below what the coarsest QPs give, naming that minimum,
    before anything is encoded (the estimate is the one the allocator works with)."""
    if target.kind == "snr":
        return
    from llmc_format.units import format_size

    smallest = _non_video_estimate(plan) + min_bits(plan.curves, qrange) / 8
    if target.kind == "size" and target.value < smallest:
        raise TargetError(f"--size {format_size(int(target.value))} is not achievable: the "
                          f"smallest this model packs to with these options is about "
                          f"{format_size(int(smallest))} (every lossy tensor at its coarsest "
                          f"QP; lossless tensors {format_size(plan.exact_bytes)}, attachments "
                          f"{format_size(plan.attachment_bytes)})")
    lossless = plan.exact_bytes + plan.attachment_bytes
    min_bpw = 8 * (smallest - lossless) / max(plan.lossy_weights, 1)
    if target.kind == "bpw" and target.value < min_bpw:
        raise TargetError(f"--bpw {target.value:g} is not achievable: the fewest bits per "
                          f"lossy weight with these options are about {min_bpw:.3f} (every "
                          "lossy tensor at its coarsest QP, all-in)")


def capped_tensors(plan: Plan, alloc: Allocation, qrange: range) -> list[str]:
    """The lossy tensors of ``alloc`` at the finest QP their samples allow (``EXTRAPOLATE``
    beyond the finest sample) whose exact storage costs more than that QP: the allocation
    may want them finer, and ``extend_capped`` can sample finer. Not those sampled finer
    already, at a codec floor or at the codec's lowest QP, nor those without an exact
    option (a repack's)."""
    out = []
    for n, q in sorted(alloc.qps.items()):
        c = plan.curves[n]
        exact = plan.exact_options.get(n)
        if (n in plan.extended or n in plan.floors or exact is None
                or min(c.qps) <= qrange[0] or q > max(qrange[0], min(c.qps) - EXTRAPOLATE)):
            continue
        if 8 * exact > c.numel * c.rate(q) + 8 * plan.params_bytes.get(n, 0):
            out.append(n)
    return out


def extend_capped(source: Source, policy: Policy, plan: Plan, names: list[str], qrange: range,
                  col_weights: Mapping[str, np.ndarray], jobs: int,
                  progress: Progress | None = None) -> None:
    """Sample ``names`` at finer QPs (``rd.sample.measure``'s ``finer_until``: toward their
    exact rate, down to the codec's lowest QP or the finest it codes), in ``plan``.

    Why here and not in ``measure_source``: a float32 or bf16 model's tensors all cost far
    more exact than at their finest default sample, but only a high-rate target needs
    finer samples; measured when the allocation asks for them, they cost a few encodes
    of the capped tensors' samples (SmolLM2's Q8_0 embedding at 84.6 MB: one, ~6 s).
    ``policy`` is the one the plan was measured with (``activation_policy``'s)."""
    wanted = set(names)
    entries = {n: e for n, e in source.tensors() if n in wanted}
    policy = with_encoder_threads(policy, jobs)

    def work(n: str) -> tuple[str, Any]:
        e, c = entries[n], plan.curves[n]
        return n, measure(n, e(), lambda q: policy.pipeline(n, e.dtype, e.shape, q), (),
                          col_weights=col_weights.get(n), known=c,
                          finer_until=(8 * plan.exact_options[n] / max(c.numel, 1), qrange[0]))

    if progress:
        progress("sampling finer", "", 0, len(names))
    with ThreadPoolExecutor(jobs) as pool:
        for i, (n, m) in enumerate(pool.map(work, names)):
            plan.curves[n] = m.curve
            if m.floor_qp is not None:
                plan.floors[n] = m.floor_qp
            if progress:
                progress("sampling finer", n, i + 1, len(names))
    plan.extended |= wanted


def _passes(source: Source, dst: Path, target: Target, policy: Policy, jobs: int, plan: Plan,
            qrange: range, weights: dict[str, float], weighting: str, names: set[str],
            work_dir: Path, progress: Progress | None, pack_kwargs: dict[str, Any],
            new: bool, note: dict[str, Any] | None = None,
            col_weights: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    col_weights = col_weights or {}
    # bytes outside the allocation: tensors it does not decide and attachments (measured
    # in step 1), and header, index and padding (estimated, then measured)
    outside = plan.exact_bytes + plan.attachment_bytes
    fixed = (layout.HEADER_SIZE + layout.FOOTER_SIZE + 64 * plan.n_blobs_est
             + 600 * (len(plan.curves) + 8) + outside)
    params_bits = {n: 8.0 * plan.params_bytes.get(n, 0) for n in names}
    exact_bits = {n: 8.0 * b for n, b in plan.exact_options.items() if n in names}
    previous: Path | None = None
    prev: dict[str, int | None] = {}
    finer: dict[str, int] = {}  # snr: the QP a tensor that missed the floor must not exceed
    summary: dict[str, Any] = {}
    ok, file_bytes = False, 0
    # the largest file under the target seen so far: the answer if no pass lands in the window
    best_under: Path | None = None
    best_under_bytes = 0
    best_summary: dict[str, Any] = {}

    def allocate() -> Allocation:
        if target.kind == "snr":
            alloc = allocate_snr(plan.curves, target.value, qrange, exact_bits=exact_bits,
                                 fixed_bits=params_bits, floors=plan.floors)
            alloc.qps.update({n: max(min(alloc.qps[n], q), plan.floors.get(n, qrange[0]))
                              for n, q in finer.items() if n in alloc.qps})
            return alloc
        allowed = (target.value if target.kind == "size"
                   else target.value * plan.lossy_weights / 8 + outside)
        safety = 1.0 - target.tolerance / 4  # aim inside the window, near its top
        return allocate_rate(plan.curves, (allowed - fixed) * 8 * safety, qrange, weights,
                             exact_bits=exact_bits, fixed_bits=params_bits, floors=plan.floors)

    for npass in range(1, MAX_PASSES + 1):
        alloc = allocate()
        # a tensor held at the finest QP its samples allow, its exact storage far above:
        # sample it finer and allocate again (each tensor once)
        while capped := capped_tensors(plan, alloc, qrange):
            extend_capped(source, policy, plan, capped, qrange, col_weights, jobs, progress)
            alloc = allocate()
        choices = {n: alloc.choice(n) for n in names}
        if choices == prev:  # the same file again (e.g. everything kept exact, under a size)
            break
        summary = {**_summary(target, alloc, weighting, npass), **(note or {})}
        records = {n: {**_record(plan.curves[n], choices[n], exact_bits.get(n)),
                       **plan.carried.get(n, {})} for n in names}
        out = work_dir / f"pass{npass}.llmc"
        reuse = Reader(previous) if previous else None
        unchanged = {n for n in names if n in prev and prev[n] == choices[n]}
        if reuse is not None:
            unchanged |= {e.name for e in reuse.index.tensors if e.name not in names}
        try:
            pack_source(source, out, policy=pinned_exact(policy, alloc.exact), jobs=jobs,
                        qp_overrides=alloc.qps, rd_records=records,
                        extra_metadata={"rd": summary}, reuse=reuse, reuse_names=unchanged,
                        progress=(lambda ev, n, d, t, k=npass: progress(f"pass {k}: encoding", n, d, t))
                        if progress else None, **pack_kwargs)
        except CodecError as exc:
            # the codec refused a tensor at its QP although its sample coded at that QP (or
            # the QP was extrapolated): a floor above it, and allocate again
            failed = [n for n, q in alloc.qps.items() if repr(n) in str(exc)
                      and q < max(plan.curves[n].qps)]
            if not failed or npass == MAX_PASSES:
                raise
            for n in failed:  # +2: its sample coded at the QP, so the limit is near
                plan.floors[n] = alloc.qps[n] + 2
            continue
        finally:
            if reuse is not None:
                reuse.close()
        if progress:
            progress(f"pass {npass}: checking", out.name, 0, 1)
        ok, file_bytes, outside, stored = _check(out, target, plan, names)
        under = target.kind != "snr" and _achieved_value(out, target, names) <= target.value
        if previous is not None and previous != best_under:
            previous.unlink()
        if under and (best_under is None or file_bytes > best_under_bytes):
            if best_under is not None and best_under != previous:
                best_under.unlink()
            best_under, best_under_bytes, best_summary = out, file_bytes, summary
        previous, prev = out, choices
        if ok:
            break
        # correct: real rate of each lossy tensor vs predicted at its QP, real exact sizes,
        # the real bytes outside the allocation
        for n, q in alloc.qps.items():
            c = plan.curves[n]
            predicted = c.rate(q) * c.numel / 8
            actual = stored[n][0]
            if predicted > 0 and actual > 0:
                c.rate_scale *= actual / predicted
        for n in alloc.exact:
            exact_bits[n] = 8.0 * stored[n][1]
        fixed = file_bytes - sum(total for _, total in stored.values())
        if target.kind == "snr":
            with Reader(out) as r:
                for n, q in alloc.qps.items():
                    if (r.tensor(n).rd or {}).get("snr_db", 0) < target.value:
                        finer[n] = q - 1
    if not ok:
        if best_under is not None:
            # integer QPs on few tensors may not reach the window: keep the closest file
            # under the target and say so
            previous, summary = best_under, best_summary
            summary["within_tolerance"] = False
        else:
            got = (f"{_achieved_value(previous, target, names):.3f} bits per weight, "
                   if target.kind == "bpw" and previous is not None else "")
            raise TargetError(f"could not meet the {target.kind} target {target.value:g} in "
                              f"{npass} passes (last file {got}{file_bytes:,} bytes)")
    assert previous is not None
    check_output_file(dst)
    check_still_new(dst, new)  # (we hold dst's lock: pack_to_target)
    if progress:
        progress("writing", dst.name, 0, 1)
    os.replace(previous, dst)
    summary["achieved"] = _achieved(dst, names)
    return summary


def _record(curve: RDCurve, choice: int | None, exact_bits: float | None) -> dict[str, Any]:
    """What a candidate's index entry records of the allocation: its samples, what was
    chosen (``chosen_qp``, or ``kept_exact``) and the predicted rate and MSE."""
    rec: dict[str, Any] = curve.to_dict()
    if exact_bits is not None:
        rec["exact_bpw"] = exact_bits / max(curve.numel, 1)
    if choice is None:
        rec.update(kept_exact=True, predicted_bpw=rec.get("exact_bpw"), predicted_mse=0.0)
    else:
        rec.update(chosen_qp=choice, predicted_bpw=curve.rate(choice),
                   predicted_mse=curve.distortion(choice))
    return rec


def _summary(target: Target, alloc: Allocation, weighting: str, npass: int) -> dict[str, Any]:
    return {"target": target.describe(), "lambda": alloc.lam, "weighting": weighting,
            "passes": npass, "predicted_lossy_bits": alloc.predicted_bits,
            "kept_exact": sorted(alloc.exact)}


def _check(path: Path, target: Target, plan: Plan, names: set[str]
           ) -> tuple[bool, int, int, dict[str, tuple[int, int]]]:
    """Whether ``path`` meets the target; its size, the bytes outside the allocation
    (other tensors, attachments), and per candidate (bitstream bytes, stored bytes)."""
    with Reader(path) as r:
        file_bytes = r.file_size
        stored = _stored_bytes(r, names)
        others = sum(e.stored_bytes for e in r.index.tensors if e.name not in names)
        attachments = sum(a.blob.length for a in r.attachments())
        if target.kind == "snr":
            worst = min((_snr(r.tensor(n)) for n in names), default=math.inf)
            return worst >= target.value, file_bytes, others + attachments, stored
    if target.kind == "size":
        achieved, goal = file_bytes, target.value
    else:
        achieved = 8 * (file_bytes - others - attachments) / plan.lossy_weights
        goal = target.value
    ceiling = goal * (1 + target.tolerance) if target.allow_over else goal
    return goal * (1 - target.tolerance) <= achieved <= ceiling, file_bytes, others + attachments, stored


def _snr(entry: Any) -> float:
    """A tensor's recorded SNR; +inf for one stored exactly."""
    if is_lossless(entry.pipeline):
        return math.inf
    return float((entry.rd or {}).get("snr_db", -math.inf))


def _achieved_value(path: Path, target: Target, names: set[str]) -> float:
    """The file's figure in the target's unit (bytes, or bits per candidate weight)."""
    a = _achieved(path, names)
    return a["file_bytes"] if target.kind == "size" else a["rd_bpw_all_in"]


def _achieved(path: Path, names: set[str]) -> dict[str, Any]:
    """The figures of a packed file: what ``bpw`` counts (``rd_bpw_all_in``: the file less
    the tensors outside the allocation and the attachments, per candidate weight), the
    lossy and kept-exact candidates, and the whole file per weight of the whole model."""
    with Reader(path) as r:
        cands = [r.tensor(n) for n in names]
        lossy = [e for e in cands if not is_lossless(e.pipeline)]
        rd_weights = sum(e.numel for e in cands)
        others = sum(e.stored_bytes for e in r.index.tensors if e.name not in names)
        attachments = sum(a.blob.length for a in r.attachments())
        model_weights = sum(e.numel for e in r.index.tensors if e.alias_of is None)
        snrs = [float(e.rd["snr_db"]) for e in lossy if e.rd and "snr_db" in e.rd]
        return {
            "file_bytes": r.file_size,
            "rd_weights": rd_weights,
            "rd_bpw_all_in": 8 * (r.file_size - others - attachments) / max(rd_weights, 1),
            "lossy_tensors": len(lossy),
            "lossy_weights": sum(e.numel for e in lossy),
            "kept_exact_tensors": len(cands) - len(lossy),
            "kept_exact_bytes": sum(e.stored_bytes for e in cands if is_lossless(e.pipeline)),
            "lossless_tensor_bytes": others,
            "attachment_bytes": attachments,
            "model_weights": model_weights,
            "model_bpw": 8 * r.file_size / max(model_weights, 1),
            "min_snr_db": min(snrs) if snrs else None,
        }


def repack(src: str | os.PathLike[str], dst: str | os.PathLike[str], target: Target, *,
           jobs: int | None = None, weighting: str = "nmse",
           progress: Progress | None = None, keep_multipliers: bool = True) -> dict[str, Any]:
    """Re-encode a lossy archive to a new target without the original model.

    The lossy tensors are decoded and encoded again (transcoded) at QPs chosen from the RD
    samples recorded in the archive, with each sample's MSE raised by the error the
    archive already carries; tensors without recorded samples are measured afresh.
    Lossless tensors and attachments are carried over unchanged.

    Activation-aware tensors (stored through a ``diagscale`` stage, spec §7.9) keep their
    multipliers: the same stage, bit for bit the same vectors, goes in front of their new
    quantization (``Policy.diagscale``), so the new codec error lands where the model
    feels it least, as in the input; one the allocation keeps exact stores the decoded
    values and drops them (as a pack does). The allocation stays activation-aware: the
    recorded samples hold the activation-weighted MSE measured on the original
    (``weighted_mse``, the new coding error: see ``_shifted``), and a tensor measured
    afresh gets the column weights recovered from its multipliers
    (``rd.activation.weights_from_multipliers``, with the α and clip the input recorded;
    plain MSE when it recorded none: multipliers not made by ``rd.activation``).
    ``keep_multipliers=False`` drops them (a measurement baseline: repack did so before,
    but allocated from the recorded samples, measured through the multipliers, which need
    not describe a coding without them — a SmolLM2 repack that way missed its target,
    docs/results/repack-actscale.md —, so here the samples are measured afresh, plain
    MSE, for the coding without them).
    """
    from llmc_format.io.archive_source import ArchiveSource

    new = not os.path.lexists(dst)  # (decided before the work: see pack_to_target)
    with ArchiveSource(src) as source:
        entries = [e for e in source.reader.index.tensors if e.alias_of is None]
        lossy = [e for e in entries if not is_lossless(e.pipeline)]
        if not lossy:
            raise TargetError(f"{src} holds no lossy tensor: nothing to re-target; pack it "
                              f"instead: llmc pack {src} -o {dst} --codec vvc "
                              f"--{target.kind} {target.value:g}")
        # the archive's codec, scaling and transform (its RD samples were measured with
        # them), taken from configs the codecs themselves validate, never used raw
        where = f"tensor {lossy[0].name!r}"
        video = get_codec(lossy[0].pipeline[-1], where)
        # the stage making the samples: the one before the video stage (after any diagscale)
        affine = get_codec(lossy[0].pipeline[max(0, len(lossy[0].pipeline) - 2)], where)
        if not (isinstance(video, ArrayBytesCodec) and video.sample_qps and video.qp_range):
            raise TargetError(f"{src}: {where} is not coded by a codec a target can drive "
                              f"({video.codec_id}; those are {', '.join(target_codecs())}): "
                              f"nothing to re-target")
        transform = transform_of(affine.codec_id)
        if transform is None:
            raise TargetError(f"{src}: {where} is not quantized by a stage a target packs with "
                              f"({', '.join(QUANT_STAGES.values())}): nothing to re-target")
        scales = _kept_multipliers(source, lossy, src) if keep_multipliers else {}
        dct = transform == "dct"
        policy = Policy(codec=video.codec_id, preset=video.params.get("preset"),
                        bits=int(affine.params.get("bits", 10)), min_lossy_numel=2**62,
                        affine={} if dct else
                        {"granularity": str(affine.params.get("granularity", "row"))},
                        transform="dct" if dct else "none",
                        lossy_patterns=tuple(_glob_escape(e.name) for e in lossy),
                        diagscale=scales)
        qrange = _qrange(video.codec_id)
        for e in lossy:  # NaN samples once made --bpw 3 write 0.887 bpw and exit 0
            check_rd(e.rd, (qrange[0], qrange[-1]), e.name)
        plan = None
        carried = {e.name: _carried(e.rd or {}) for e in lossy if (e.rd or {}).get("mse") is not None}
        recorded = all(e.rd and "samples" in e.rd and "mse" in e.rd for e in lossy)
        # samples measured through multipliers that are now dropped describe another coding
        recorded = recorded and (keep_multipliers or not any(
            c.get("id") == "diagscale" for e in lossy for c in e.pipeline))
        made_by = _activation_transform(source.reader.metadata) if scales else None
        derived: dict[str, np.ndarray] = {}
        if recorded:
            curves = {e.name: _shifted(e.rd, e.numel, carried[e.name]) for e in lossy}
            params = {e.name: sum(b.length for b in e.blobs if b.stage < len(e.pipeline) - 1)
                      for e in lossy}
            exact = sum(e.stored_bytes for e in entries if is_lossless(e.pipeline))
            att = sum(a.blob.length for a in source.reader.attachments())  # as stored
            plan = Plan(curves, params, exact, sum(e.numel for e in lossy), att,
                        sum(len(e.blobs) for e in entries) + 8, carried=carried)
        else:
            if made_by is not None:
                derived = {n: weights_from_multipliers(s.cols, *made_by)
                           for n, s in scales.items() if s.cols is not None}
            plan = measure_source(source, with_target_scaling(policy), jobs or default_jobs(),
                                  progress=progress, col_weights=derived)
            plan.carried = carried
        note = _repack_note(scales, plan, made_by, recorded, Path(src).name)
        summary = pack_to_target(source, dst, target, policy=policy, jobs=jobs,
                                 weighting=weighting, progress=progress, plan=plan, new=new,
                                 activation=note)
    summary["repacked_from"] = Path(src).name
    summary["versus_original"] = _versus_original(Path(dst))
    return summary


def _kept_multipliers(source: Any, lossy: list[Any], src: Any) -> dict[str, Any]:
    """The ``diagscale`` multipliers of the lossy tensors (``ArchiveSource.diagscales``);
    TargetError for a lossy tensor with a ``diagscale`` stage repack cannot re-create (one
    not in front: the pipelines a target packs are ``[diagscale?, quant, codec]``)."""
    scales = source.diagscales()
    for e in lossy:
        if e.name not in scales and any(c.get("id") == "diagscale" for c in e.pipeline):
            raise TargetError(f"{src}: tensor {e.name!r} has a diagscale stage that is not its "
                              "first; repack re-creates only [diagscale, quantization, codec]")
    return {e.name: scales[e.name] for e in lossy if e.name in scales}


def _activation_transform(metadata: Any) -> tuple[float, float] | None:
    """(α, clip) of the multipliers, from the archive's ``rd.activation`` (a target pack's,
    or a repack's that kept them); None when it recorded no usable pair — multipliers
    chosen otherwise (``Policy.diagscale`` by code), whose statistics are unknown. The
    values come from a file: only finite α in (0, 4] and clip in (1, 65504] are used
    (clip absent: ``rd.activation.CLIP``, what every pack so far used)."""
    rd = metadata.get("rd") if isinstance(metadata, dict) else None
    act = rd.get("activation") if isinstance(rd, dict) else None
    if not isinstance(act, dict):
        return None
    alpha, clip = act.get("alpha"), act.get("clip", CLIP)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             for v in (alpha, clip))
    if not (ok and 0 < alpha <= 4 and 1 < clip <= 65504):
        return None
    return float(alpha), float(clip)


def _shifted(rd: dict[str, Any], numel: int, carried: dict[str, float]) -> RDCurve:
    """A tensor's recorded RD curve with the error its input already carries added to the
    MSE samples (what the records and an ``snr`` target count against the original; the
    samples of an input that was itself repacked hold its prior already).

    The activation-weighted samples (``weighted_mse``, what a rate target minimizes) are
    left as recorded, the new coding error alone: the carried error is a constant per
    tensor that no choice changes, and added to samples modelled log-linearly in QP it
    would bend the model — extrapolated to finer QPs it then promises to remove error the
    input carries."""
    c = RDCurve.from_dict(rd, numel)
    shift = carried["prior_mse"] - float(rd.get("prior_mse", 0.0))
    c.mse = [m + shift for m in c.mse]
    return c


def _repack_note(scales: dict[str, Any], plan: Plan, made_by: tuple[float, float] | None,
                 recorded: bool, src: str) -> dict[str, Any] | None:
    """The summary's ``activation`` of a repack that kept multipliers (what ``inspect`` and
    the CLI show, and what a further repack derives weights from); None without any."""
    if not scales:
        return None
    weighted = sum(1 for n in scales if n in plan.curves and plan.curves[n].weighted is not None)
    if not weighted:
        how = ("MSE (the input recorded neither activation-weighted samples nor the alpha "
               "its multipliers were made with)")
    else:
        how = ("activation-weighted MSE (" + ("the samples recorded in the input" if recorded
               else "column weights recovered from the multipliers") + ")"
               + ("" if weighted == len(scales) else f"; MSE for {len(scales) - weighted}"))
    note: dict[str, Any] = {"tensors": len(scales), "multipliers": f"kept from {src}",
                            "weighted_tensors": weighted, "distortion": how}
    if made_by is not None:
        note["alpha"], note["clip"] = made_by
    return note


def _carried(rd: dict[str, Any]) -> dict[str, float]:
    """What a repacked tensor records about the original (``metrics.versus_original``):
    the error its input already carried against the original, and the original's energy."""
    from llmc_format.metrics import versus_original

    before = versus_original(rd)
    out = {"prior_mse": before["mse"] if before else float(rd["mse"])}
    energy = rd.get("original_energy")
    snr = rd.get("snr_db")
    if energy is None and isinstance(snr, (int, float)) and math.isfinite(snr) and rd["mse"] > 0:
        energy = float(rd["mse"]) * 10 ** (float(snr) / 10)  # SNR = energy / MSE
    if energy is not None:
        out["original_energy"] = float(energy)
    return out


def _versus_original(path: Path) -> dict[str, Any]:
    """Min and mean SNR of the lossy tensors against the original model (an estimate)."""
    from llmc_format.metrics import versus_original

    with Reader(path) as r:
        snrs = [v["snr_db"] for e in r.index.tensors if e.rd
                for v in [versus_original(e.rd)] if v and "snr_db" in v]
    return {"estimate": True, "tensors": len(snrs),
            "min_snr_db": min(snrs) if snrs else None,
            "mean_snr_db": sum(snrs) / len(snrs) if snrs else None}


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
