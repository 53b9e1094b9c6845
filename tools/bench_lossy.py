"""Lossy benchmark on real weights: rate, weight SNR and speed of every lossy method, one run.

Why one script: the question "where does VVC stand" only has an answer next to the other
methods measured the same way on the same weights — the same all-in rate (every byte a
decoder needs: bitstreams *and* quantization parameters), the same weighted SNR
(10·log10 Σx²/Σ(x−x̂)² over all the weights, so big matrices count by their size) and the
same clocks. The video codecs go through the real llmc pipeline (``affine`` stage then the
video stage, ``encode_tensor``/``decode_tensor``), so what is measured is what ``llmc pack``
writes.

Methods (``--codecs``): ``vvc``, ``hevc``, ``av1`` at QPs; ``rtn`` (round-to-nearest,
groups of 128, float16 scale and minimum) at 2/3/4 bits; ``nncodec`` (one NNC stream per
matrix) at its QPs; ``hqq`` (groups of 64, not in the default set) at 2/3/4 bits; and
issue 8's variants ``vvc-untuned``, ``vvc-tuned``, ``vvc-dct``, ``hevc-tuned``, ``hevc-dct``
(see ``VIDEO_VARIANTS``), compared at equal rate with NNCodec in a final table:

    python tools/bench_lossy.py --model smollm2 --layers 0,7,15,29 -j 1 --threads 1 \
        --codecs vvc-untuned,vvc-tuned,vvc-dct,hevc-tuned,hevc-dct,nncodec

Weights: SmolLM2-135M's 210 decoder Linear weights and MiniLM-L6's 36 encoder matrices
(``tools/models.py``), optionally a subset of layers.

Speed: wall clock (M weights/s) and CPU seconds (this process plus its encoder child
processes: the machine is shared, CPU time is the steadier figure). Video encodes run
``--jobs`` tensors at once in threads (each encoder is its own process); decodes run one
tensor at a time, in-process as ``llmc`` reads. Video encode time includes the affine
stage and the decode-and-hash each frame gets at encode time; RTN/HQQ "encode" is the
quantizer and "decode" the dequantization; NNCodec's are its compress and decompress.

    python tools/bench_lossy.py --model both --layers 0-1 \\
        --codecs vvc,rtn --qps vvc=30,36 --per-tensor --json lossy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.stages import EncodedTensor, decode_encoded, encode_tensor
from llmc_format.errors import LlmcError
from llmc_format.metrics import error_energy, snr_record
from llmc_format.quant.affine import dequantize, quantize
from llmc_format.quant.grid import Grid, window

VIDEO_CODECS = ("vvc", "hevc", "av1")
#: video variants of issue 8's comparison: ``-untuned`` is VVC as first built (per-row
#: scaling, one QP, no -vvenc-params); ``-tuned`` is per-tensor scaling with each tensor's
#: QP set so its quantizer step is the same in weight units ("equal step", what
#: ``llmc pack --bpw B --weighting mse`` converges to) plus the codec's default settings
#: (for vvc: DepQuant). Their point is the QP of a tensor whose scale is 2^-8 per code.
#: ``-dct`` is ``-tuned`` with the ``blockdct`` stage instead of ``affine`` (``llmc pack
#: --transform dct``): the codec is fed each 32x32 block's inverse DCT, one scale per tensor.
VIDEO_VARIANTS = ("vvc-untuned", "vvc-tuned", "vvc-dct", "hevc-tuned", "hevc-dct")
ALL_METHODS = (*VIDEO_CODECS, *VIDEO_VARIANTS, "rtn", "nncodec", "hqq")
DEFAULT_METHODS = ("vvc", "hevc", "av1", "rtn", "nncodec")

#: Default operating points, chosen to span ~2-4.5 all-in bits per weight on SmolLM2
#: (VVC/HEVC/AV1: QP; rtn/hqq: bits; nncodec: its weight QP, qp_density 2).
DEFAULT_POINTS: dict[str, list[int]] = {
    "vvc": [28, 33, 39],
    "vvc-untuned": [40, 36, 32, 28],
    "vvc-tuned": [32, 28, 24, 20, 16],
    "hevc-tuned": [28, 24, 20, 16, 12],
    "vvc-dct": [32, 28, 24, 20, 16],
    "hevc-dct": [28, 24, 20, 16, 12],
    "hevc": [25, 30, 35],
    "av1": [20, 30, 41],
    "rtn": [2, 3, 4],
    "nncodec": [-12, -15, -17, -21, -23],
    "hqq": [2, 3, 4],
}
#: NNCodec's QP sets an absolute step size, so it needs other QPs on MiniLM's larger weights.
MODEL_POINTS: dict[str, dict[str, list[int]]] = {"minilm": {"nncodec": [-19, -24, -29]}}

#: Encoder presets used unless --preset says otherwise (the codecs' own defaults).
DEFAULT_PRESETS: dict[str, str | int] = {"vvc": "faster", "hevc": "medium", "av1": 8}

RTN_GROUP = 128
RTN_PARAM_BITS = 32  # float16 scale + float16 minimum per group
AFFINE_BITS = 10


# ----------------------------------------------------------------------------- results


@dataclass
class TensorResult:
    """Rate and error sums of one tensor at one operating point."""

    name: str
    numel: int
    bytes: float
    signal: float
    noise: float

    @property
    def bpw(self) -> float:
        return 8.0 * self.bytes / self.numel

    @property
    def snr_db(self) -> float | None:
        return snr_record(self.signal, self.noise)


@dataclass
class Run:
    """One method at one operating point over a set of weights."""

    model: str
    method: str
    label: str  # e.g. "vvc faster"
    point: str  # e.g. "qp 32", "4 bit"
    tensors: list[TensorResult] = field(default_factory=list)
    params_bytes: float = 0.0
    enc_wall: float = 0.0
    enc_cpu: float = 0.0
    dec_wall: float = 0.0
    dec_cpu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_weights(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def bytes(self) -> float:
        return sum(t.bytes for t in self.tensors)

    @property
    def bpw(self) -> float:
        return 8.0 * self.bytes / self.n_weights

    @property
    def snr_db(self) -> float | None:
        return snr_record(sum(t.signal for t in self.tensors), sum(t.noise for t in self.tensors))

    @property
    def gap_db(self) -> float | None:
        """6.02·bpw − SNR: distance to the Gaussian-source reference (positive = below it)."""
        snr = self.snr_db
        return None if snr is None else 6.02 * self.bpw - snr

    def to_dict(self) -> dict[str, Any]:
        n = self.n_weights
        return {
            "model": self.model, "method": self.method, "label": self.label, "point": self.point,
            "weights": n, "bytes": self.bytes, "bpw": self.bpw,
            "params_bpw": 8.0 * self.params_bytes / n, "snr_db": self.snr_db, "gap_db": self.gap_db,
            "encode_wall_s": self.enc_wall, "encode_cpu_s": self.enc_cpu,
            "decode_wall_s": self.dec_wall, "decode_cpu_s": self.dec_cpu,
            "encode_mw_per_s": n / self.enc_wall / 1e6 if self.enc_wall else None,
            "decode_mw_per_s": n / self.dec_wall / 1e6 if self.dec_wall else None,
            **self.extra,
            "tensors": [{"name": t.name, "numel": t.numel, "bytes": t.bytes, "bpw": t.bpw,
                         "snr_db": t.snr_db} for t in self.tensors],
        }


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished child processes (encoders)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Accumulates wall and CPU seconds over ``with`` blocks."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._t, self._c = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._t
        self.cpu += cpu_seconds() - self._c


# ----------------------------------------------------------------------------- methods

Weights = Mapping[str, np.ndarray]


def video_pipeline(codec: str, qp: int, preset: str | int | None, threads: int,
                   vvenc_params: str | None = None) -> list[dict[str, Any]]:
    """The configs ``llmc pack`` uses for a lossy tensor: affine (10-bit, per row) + video."""
    video: dict[str, Any] = {"id": codec, "bits": AFFINE_BITS, "qp": qp}
    if codec == "vvc" and vvenc_params is not None:
        video["vvenc_params"] = vvenc_params
    if preset is not None:
        video["preset"] = preset
    if threads:
        video["threads"] = threads
    return [{"id": "affine", "bits": AFFINE_BITS}, video]


#: the per-code scale whose tensor is coded at the nominal QP under "equal step"
REFERENCE_SCALE = 2.0 ** -8


def equal_step_qp(w: np.ndarray, qp: int, dct: bool = False) -> int:
    """QP giving ``w`` (per-tensor scaling) the quantizer step of a 2^-8-scale tensor at ``qp``.

    VVC's and HEVC's step doubles every 6 QP, so a tensor whose code scale s is k octaves
    above the reference needs 6k QP less for the same step in weight units. ``dct``: the
    scale ``blockdct`` picks (its codes span the inverse-DCT domain's range).
    """
    if dct:
        from llmc_format.quant.blockdct import BlockDctCodec

        span = BlockDctCodec(bits=AFFINE_BITS).code_span(w)
    else:
        span = float(w.max()) - float(w.min())
    scale = span / (2**AFFINE_BITS - 1)
    if scale <= 0:
        return qp
    return int(min(63, max(0, qp + round(6 * np.log2(REFERENCE_SCALE / scale)))))


def run_video(model: str, weights: Weights, codec: str, qp: int, *, preset: str | int | None,
              jobs: int, threads: int, vvenc_params: str | None = None,
              tuned: bool = False, dct: bool = False) -> Run:
    """Encode every tensor through affine + ``codec`` (``jobs`` at once), decode one by one.

    ``tuned``: per-tensor scaling and equal-step QPs (see ``VIDEO_VARIANTS``); ``dct``:
    the same with ``blockdct`` in place of ``affine``.
    """
    specs = {name: ArraySpec("float32", tuple(w.shape), name) for name, w in weights.items()}

    def encode(name: str) -> EncodedTensor:
        w = weights[name]
        pipe = video_pipeline(codec, equal_step_qp(w, qp, dct) if tuned or dct else qp, preset,
                              threads, vvenc_params)
        if dct:
            pipe[0] = {"id": "blockdct", "bits": AFFINE_BITS}
        elif tuned:
            pipe[0]["granularity"] = "tensor"
        return encode_tensor(w, specs[name], pipe)

    label = codec if preset is None else f"{codec} {preset}"
    if codec == "av1":
        label = f"av1 svt p{preset}" if preset is not None else "av1 svt"
    method = codec + ("-dct" if dct else "-tuned" if tuned else
                      "-untuned" if vvenc_params == "" else "")
    if dct:
        label += " tuned + blockdct"
    elif tuned:
        label += " tuned"
    elif vvenc_params == "":
        label += " untuned"
    run = Run(model, method, label, f"qp {qp}")
    enc_clock, dec_clock = Clock(), Clock()
    with enc_clock, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        encoded = dict(zip(weights, pool.map(encode, weights), strict=True))
    for name, w in weights.items():
        enc = encoded[name]
        enc.reconstruction = None  # time a real decode of the bitstreams, as llmc reads
        with dec_clock:
            decoded = decode_encoded(enc, specs[name])
        signal, noise = error_energy(w, decoded)
        nbytes = sum(len(b) for _, b in enc.blobs)
        run.params_bytes += sum(len(b) for s, b in enc.blobs if s == 0)
        run.tensors.append(TensorResult(name, w.size, nbytes, signal, noise))
    video = next(iter(encoded.values())).pipeline[-1]
    if "DepQuant=1" in video.get("vvenc_params", ""):
        run.label += " DQ"  # dependent quantization (the vvc default since it was measured)
    run.extra = {"encoder": video.get("encoder"), "encoder_version": video.get("encoder_version"),
                 "vvenc_params": video.get("vvenc_params"),
                 "frames": sum(e.info[-1].get("frames", 0) for e in encoded.values())}
    run.enc_wall, run.enc_cpu = enc_clock.wall, enc_clock.cpu
    run.dec_wall, run.dec_cpu = dec_clock.wall, dec_clock.cpu
    return run


def run_rtn(model: str, weights: Weights, bits: int) -> Run:
    """Round-to-nearest, asymmetric min-max per group of 128, float16 params (``tools/baselines/rtn.py``)."""
    run = Run(model, "rtn", f"rtn g{RTN_GROUP}", f"{bits} bit")
    enc_clock, dec_clock = Clock(), Clock()
    for name, w in weights.items():
        grid = Grid.of(tuple(w.shape), "group", RTN_GROUP)
        with enc_clock:
            qz = quantize(w, bits=bits, granularity="group", group_size=RTN_GROUP,
                          param_dtype="float16", name=name)
        with dec_clock:
            deq = dequantize(qz.codes.reshape(grid.rows, grid.cols), qz.params, grid,
                             window(tuple(w.shape), None), "float32")
        params_bits = grid.n_cells * RTN_PARAM_BITS
        run.params_bytes += params_bits / 8
        signal, noise = error_energy(w, deq.reshape(w.shape))
        run.tensors.append(TensorResult(name, w.size, (w.size * bits + params_bits) / 8, signal, noise))
    run.enc_wall, run.enc_cpu = enc_clock.wall, enc_clock.cpu
    run.dec_wall, run.dec_cpu = dec_clock.wall, dec_clock.cpu
    return run


def run_nncodec(model: str, weights: Weights, qp: int) -> Run:
    """NNCodec 2.1.3 (DeepCABAC), one bitstream per matrix, default options."""
    from tools.baselines.nncodec_adapter import _nnc

    nnc = _nnc()
    run = Run(model, "nncodec", "nncodec", f"qp {qp}")
    enc_clock, dec_clock = Clock(), Clock()
    for name, w in weights.items():
        params = {"w": np.ascontiguousarray(w, dtype=np.float32)}
        with enc_clock:
            stream = nnc.compress(params, bitstream_path=None, qp=int(qp), return_bitstream=True,
                                  verbose=False)
        with dec_clock:
            decoded = nnc.decompress(bytearray(stream), verbose=False)
        rec = np.asarray(decoded["w"], dtype=np.float32).reshape(w.shape)
        signal, noise = error_energy(w, rec)
        run.tensors.append(TensorResult(name, w.size, len(stream), signal, noise))
    run.enc_wall, run.enc_cpu = enc_clock.wall, enc_clock.cpu
    run.dec_wall, run.dec_cpu = dec_clock.wall, dec_clock.cpu
    return run


def run_hqq(model: str, weights: Weights, bits: int) -> Run:
    """HQQ g64 (``tools/baselines/hqq_adapter``); quantize + dequantize timed together."""
    from tools.baselines.hqq_adapter import quantize_matrix

    run = Run(model, "hqq", "hqq g64", f"{bits} bit")
    clock = Clock()
    for name, w in weights.items():
        with clock:
            rec, all_in_bpw, _, _ = quantize_matrix(w, bits, 64, name=name)
        signal, noise = error_energy(w, rec)
        run.params_bytes += (all_in_bpw - bits) * w.size / 8
        run.tensors.append(TensorResult(name, w.size, all_in_bpw * w.size / 8, signal, noise))
    run.enc_wall, run.enc_cpu = clock.wall, clock.cpu
    run.extra = {"timing": "encode columns = quantize + dequantize"}
    return run


# ----------------------------------------------------------------------------- weights


def parse_layers(text: str | None) -> set[int] | None:
    """``"0-3"`` -> {0, 1, 2, 3}; ``"0,5,7-8"`` works too; None = all layers."""
    if not text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        a, sep, b = part.partition("-")
        out.update(range(int(a), int(b) + 1) if sep else [int(a)])
    return out


_LAYER_RE = re.compile(r"\.(\d+)\.")


def layer_of(name: str) -> int:
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else -1


def load_weights(model: str, layers: set[int] | None) -> Weights:
    """Name -> float32 matrix for ``model`` ("smollm2" or "minilm"), keeping ``layers``."""
    from tools import models

    if model == "smollm2":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the GGUF load's bars would clutter the tables
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF conversion uses tqdm directly
        keep = range(models.SMOLLM2_N_LAYERS) if layers is None else sorted(
            i for i in layers if i < models.SMOLLM2_N_LAYERS)
        return models.smollm2_decoder_linear_weights(layers=keep)
    weights = models.minilm_encoder_weights()
    names = sorted(weights, key=lambda n: (layer_of(n), n))
    return OrderedDict((n, weights[n]) for n in names if layers is None or layer_of(n) in layers)


# ----------------------------------------------------------------------------- printing


def _f(v: float | None, spec: str) -> str:
    """``v`` formatted by ``spec`` (e.g. "8.2f"), or a "-" of the same width."""
    return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0] or 0))


HEADER = (f"{'model':8} {'method':20} {'point':7} {'Mweights':>8} {'bpw':>6} {'params':>6} "
          f"{'SNR dB':>7} {'gap dB':>6} {'enc Mw/s':>8} {'enc CPU s':>9} {'dec Mw/s':>8} "
          f"{'dec CPU s':>9}")


def row_text(r: Run) -> str:
    """One line of the main table; ``params`` is the quantization parameters' share of bpw."""
    n = r.n_weights
    enc = n / r.enc_wall / 1e6 if r.enc_wall else None
    dec = n / r.dec_wall / 1e6 if r.dec_wall else None
    return (f"{r.model:8} {r.label:20} {r.point:7} {n / 1e6:8.2f} {r.bpw:6.3f} "
            f"{8 * r.params_bytes / n:6.3f} {_f(r.snr_db, '7.2f')} {_f(r.gap_db, '6.2f')} "
            f"{_f(enc, '8.3f')} {r.enc_cpu:9.1f} {_f(dec, '8.2f')} "
            f"{_f(r.dec_cpu if r.dec_wall else None, '9.1f')}")


def _kind(name: str) -> str:
    """Tensor name with the layer index replaced by '*' (q_proj of every layer -> one kind)."""
    return _LAYER_RE.sub(".*.", name, count=1)


def print_per_tensor(runs: Sequence[Run]) -> None:
    """bpw / SNR of every tensor at each VVC QP, then aggregated by kind (q, k, v, ...)."""
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        if r.method == "vvc":
            by_model.setdefault(r.model, []).append(r)
    for model, vruns in by_model.items():
        cols = "".join(f" {r.point + ' bpw':>10} {'SNR':>6}" for r in vruns)
        print(f"\nper tensor, {model}, {vruns[0].label}:")
        print(f"{'tensor':48} {'numel':>11}{cols}")
        for i, t in enumerate(vruns[0].tensors):
            cells = "".join(f" {r.tensors[i].bpw:10.3f} {_f(r.tensors[i].snr_db, '6.2f')}"
                            for r in vruns)
            print(f"{t.name[-48:]:48} {t.numel:11,}{cells}")
        print(f"\nby kind (all layers pooled), {model}, {vruns[0].label}:")
        print(f"{'kind':48} {'weights':>11}{cols}")
        kinds = OrderedDict((_kind(t.name), None) for t in vruns[0].tensors)
        for kind in kinds:
            cells = ""
            for r in vruns:
                sel = [t for t in r.tensors if _kind(t.name) == kind]
                n = sum(t.numel for t in sel)
                snr = snr_record(sum(t.signal for t in sel), sum(t.noise for t in sel))
                cells += f" {8 * sum(t.bytes for t in sel) / n:10.3f} {_f(snr, '6.2f')}"
            n_all = sum(t.numel for t in vruns[0].tensors if _kind(t.name) == kind)
            print(f"{kind[-48:]:48} {n_all:11,}{cells}")


def interpolate(runs: Sequence[Run], bpw: float, value: Callable[[Run], float | None]) -> float | None:
    """``value`` at ``bpw`` by linear interpolation between the two nearest points around it
    (None outside the measured span): SNR is close to linear in rate, ~6 dB per bit."""
    pts = sorted((r.bpw, value(r)) for r in runs)
    for (b0, v0), (b1, v1) in pairwise(pts):
        if b0 <= bpw <= b1 and v0 is not None and v1 is not None and b1 > b0:
            return v0 + (v1 - v0) * (bpw - b0) / (b1 - b0)
    return None


def at_rates(runs: Sequence[Run], rates: Sequence[float]) -> list[dict[str, Any]]:
    """Each method's SNR, gap to 6.02·bpw and CPU speeds at ``rates``, plus its SNR
    difference to NNCodec when NNCodec was run (issue 8's comparison at equal rate)."""
    by_method: dict[str, list[Run]] = OrderedDict()
    for r in runs:
        by_method.setdefault(r.label, []).append(r)
    ref = by_method.get("nncodec")
    rows = []
    for label, rs in by_method.items():
        row: dict[str, Any] = {"method": label, "model": rs[0].model}
        for b in rates:
            snr = interpolate(rs, b, lambda r: r.snr_db)
            nnc = interpolate(ref, b, lambda r: r.snr_db) if ref else None
            row[f"snr@{b:g}"] = snr
            row[f"gap@{b:g}"] = None if snr is None else 6.02 * b - snr
            row[f"vs_nncodec@{b:g}"] = None if snr is None or nnc is None else snr - nnc
        n = sum(r.n_weights for r in rs)
        row["enc_mw_per_cpu_s"] = n / 1e6 / max(sum(r.enc_cpu for r in rs), 1e-9)
        dec = sum(r.dec_cpu for r in rs)
        row["dec_mw_per_cpu_s"] = n / 1e6 / dec if dec > 0 and rs[0].dec_wall else None
        rows.append(row)
    return rows


def print_at_rates(rows: Sequence[dict[str, Any]], rates: Sequence[float]) -> None:
    """Markdown: SNR (gap to 6.02·bpw, difference to NNCodec) at each rate, and CPU speeds."""
    heads = " | ".join(f"SNR@{b:g} (gap, vs NNC)" for b in rates)
    print(f"\n| method | {heads} | enc M w/CPU-s | dec M w/CPU-s |")
    print("|---|" + "---|" * (len(rates) + 2))
    for row in rows:
        cells = []
        for b in rates:
            snr, gap, d = row[f"snr@{b:g}"], row[f"gap@{b:g}"], row[f"vs_nncodec@{b:g}"]
            cells.append("-" if snr is None else
                         f"{snr:.2f} ({gap:.2f}, {'-' if d is None else f'{d:+.2f}'})")
        dec = row["dec_mw_per_cpu_s"]
        print(f"| {row['method']} | {' | '.join(cells)} | {row['enc_mw_per_cpu_s']:.3f} | "
              f"{'-' if dec is None else f'{dec:.2f}'} |")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the machine is shared: load averages matter)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import imageio_ffmpeg

        ff = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True,
                            text=True, check=False).stdout.splitlines()[0]
    except (ImportError, OSError, IndexError):
        ff = "?"
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "numpy": np.__version__, "ffmpeg": ff, "loadavg": os.getloadavg()}


# ----------------------------------------------------------------------------- main


def parse_points(items: Iterable[str], methods: Sequence[str], model: str) -> dict[str, list[int]]:
    """``--qps vvc=27,32`` per method; a bare ``27,32`` applies to every video codec chosen."""
    defaults = {**DEFAULT_POINTS, **MODEL_POINTS.get(model, {})}
    points = {m: list(defaults[m]) for m in methods}
    for item in items:
        key, sep, values = item.rpartition("=")
        nums = [int(v) for v in values.split(",") if v.strip()]
        targets = [key] if sep else [m for m in methods if m in VIDEO_CODECS]
        for m in targets:
            if m not in ALL_METHODS:
                raise SystemExit(f"--qps: unknown method {m!r}")
            points[m] = nums
    return points


def parse_presets(items: Iterable[str]) -> dict[str, str | int]:
    presets: dict[str, str | int] = dict(DEFAULT_PRESETS)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in VIDEO_CODECS:
            raise SystemExit(f"--preset expects CODEC=PRESET with CODEC in {VIDEO_CODECS}")
        presets[key] = int(value) if value.isdigit() else value
    return presets


def measure(model: str, weights: Weights, method: str, point: int, args: argparse.Namespace,
            presets: dict[str, str | int]) -> Run:
    runners: dict[str, Callable[[], Run]] = {
        "rtn": lambda: run_rtn(model, weights, point),
        "nncodec": lambda: run_nncodec(model, weights, point),
        "hqq": lambda: run_hqq(model, weights, point),
    }
    if method in VIDEO_CODECS:
        return run_video(model, weights, method, point, preset=presets.get(method),
                         jobs=args.jobs, threads=args.threads, vvenc_params=args.vvenc_params)
    if method in VIDEO_VARIANTS:
        codec, variant = method.split("-")
        return run_video(model, weights, codec, point, preset=presets.get(codec), jobs=args.jobs,
                         threads=args.threads, tuned=variant == "tuned", dct=variant == "dct",
                         vvenc_params="" if variant == "untuned" else args.vvenc_params)
    return runners[method]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("smollm2", "minilm", "both"), default="both")
    parser.add_argument("--layers", help="layer subset, e.g. 0-3 or 0,5 (default: all)")
    parser.add_argument("--codecs", default=",".join(DEFAULT_METHODS),
                        help=f"comma list of {', '.join(ALL_METHODS)}")
    parser.add_argument("--qps", action="append", default=[],
                        help="operating points, METHOD=P1,P2 (repeatable; bits for rtn/hqq); "
                        "a bare list sets every video codec's QPs")
    parser.add_argument("--preset", action="append", default=[], help="CODEC=PRESET, e.g. vvc=fast")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="tensors encoded at once (video)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per encoder process (0: the encoder's default)")
    parser.add_argument("--vvenc-params", help="libvvenc Key=Value:... for vvc (default: the "
                        "codec's: VvcCodec.default_vvenc_params; '' for none)")
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor SNR at the VVC QPs")
    parser.add_argument("--at", default="2,2.5,3,4",
                        help="bits per weight at which to compare methods (SNR interpolated "
                        "between measured points); '' to skip")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.codecs.split(",") if m.strip()]
    for m in methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
    points = {model: parse_points(args.qps, methods, model) for model in ("smollm2", "minilm")}
    presets = parse_presets(args.preset)
    layers = parse_layers(args.layers)
    models = ["smollm2", "minilm"] if args.model == "both" else [args.model]

    info = machine_info()
    command = "tools/bench_lossy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"# {command}")
    print(f"# {info['cpu']}, {info['cores']} cores, load {info['loadavg']}, {info['ffmpeg']}")
    runs: list[Run] = []
    at_rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        for model in models:
            weights = load_weights(model, layers)
            n = sum(w.size for w in weights.values())
            print(f"\n## {model}: {len(weights)} matrices, {n:,} weights"
                  f"{'' if layers is None else f' (layers {args.layers})'}")
            first = len(runs)
            print(HEADER)
            print("-" * len(HEADER))
            for method in methods:
                for point in points[model][method]:
                    runs.append(measure(model, weights, method, point, args, presets))
                    print(row_text(runs[-1]), flush=True)
            del weights
            rates = [float(b) for b in args.at.split(",") if b.strip()]
            if rates:
                summary = at_rates(runs[first:], rates)
                print_at_rates(summary, rates)
                at_rows.extend(summary)
            if args.per_tensor:
                print_per_tensor(runs[first:])
    except LlmcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    info["loadavg_end"] = os.getloadavg()
    total = time.perf_counter() - t_start
    print(f"\n# total {total:.0f} s wall; load at end {info['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": info, "wall_s": total,
                                         "runs": [r.to_dict() for r in runs],
                                         "at_rates": at_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
