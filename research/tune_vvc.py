"""Tune the VVC path (affine 10-bit codes + libvvenc all-intra) for rate-distortion.

Every lever is measured the same way: code a set of weight matrices at several QPs, sum
bytes (video bitstreams + affine params: the all-in rate) and squared error over all
weights, and interpolate SNR (10·log10 Σx²/Σ(x−x̂)², weighted by size) at fixed bits per
weight (default 2, 2.5, 3, 4). "gap" is 6.02·bpw − SNR; "Δ" is the SNR gain over the
lever's first row (its baseline) at the same bpw. "enc CPU s" is the encoder's CPU time
(FFmpeg child processes, user + system, all threads) per QP point, averaged over the points.
"grid SNR" is the SNR of the 10-bit affine codes alone (no codec); "grid cost" is how much
SNR the grid's error takes off the codec's at the highest-rate point measured.

QP allocation across matrices:
- ``one``: every matrix at the same QP (what ``llmc pack --qp`` does);
- ``step``: each matrix's QP is offset by 6·log2(s_ref / s) (s = its RMS affine scale) so
  every matrix gets the same quantizer step *in weight units*. That is the high-rate
  Lagrangian optimum for total squared error — a cheap stand-in for ``llmc pack --bpw``
  (``rd.allocate``), which searches the per-tensor QPs explicitly.

Levers (``--lever``; each prints one markdown table): ``scaling`` (per-row / per-tensor /
per-group min-max, MSE clipping), ``alloc`` (one QP vs equal step), ``preset``, ``tools``
(``-vvenc-params`` keys on the tuned base), ``layout`` (row/column sorting, inverse-DCT
probe), ``dct`` (the inverse-DCT pre-transform of the codes or of the float weights, with
and without ``FORCE32``: every CU and TB exactly 32x32 DCT-II), ``frames`` (transpose,
frame size, weights in chroma), ``final`` (untuned vs tuned under both allocations),
``full`` (the three-way comparison for all 210 matrices), ``nncodec`` (the reference),
``probe`` (does each ``-vvenc-params`` key change the bitstream and the decoded picture?),
``dctcheck`` (do the ``FORCE32`` keys make the encoder's transform our 32x32 DCT?). Sets:
SmolLM2 layers (``--layers 0 7 15 29``, the default; ``all``) or ``--minilm``.

Results are cached (one JSON line per tensor/quantizer/encoder/QP, keyed by a hash of the
weights) so re-runs and new tables reuse old encodes: ``--cache``. Run, e.g.::

    python research/tune_vvc.py --lever scaling alloc nncodec
    python research/tune_vvc.py --layers 15 --lever preset tools probe
    python research/tune_vvc.py --layers all --lever full nncodec

Results and conclusions: docs/results/tuning.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tools` and `llmc_format` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.codecs.video import ffmpeg
from llmc_format.codecs.video import frames as framing
from llmc_format.codecs.video.codecs import raw_frame
from llmc_format.errors import CodecError
from llmc_format.quant.affine import dequantize, quantize
from llmc_format.quant.grid import Grid, window

TARGETS = (2.0, 2.5, 3.0, 4.0)
DEFAULT_LAYERS = (0, 7, 15, 29)
#: weight-domain step of QP ``q`` for a matrix of scale ``S_REF`` (``step`` allocation)
S_REF = 2.0**-8
ENCODER = "libvvenc"
PIX_FMT = "yuv420p10le"
DEPTH = 10


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Quant:
    """Affine stage settings. ``clip_bits="auto"`` derives them from the QP (see clip_bits_for)."""

    granularity: str = "row"
    group_size: int = 128
    clip: str = "none"
    clip_bits: float | str | None = None
    #: rows (norm) or rows and columns (norm2) sorted by RMS before coding, restored after;
    #: the permutations are counted as params (log2 n! bits each)
    row_order: str = "none"

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Enc:
    """Encoder settings: preset, ``-vvenc-params``, sample layout and frame size."""

    preset: str = "faster"
    params: str = ""
    #: luma: weights in Y, chroma constant; yuv: weights fill Y, then Cb and Cr;
    #: dct32: luma holds the inverse DCT of each 32x32 block of codes, so the encoder's
    #: DCT sees the codes themselves (a research probe: decoding needs our forward DCT);
    #: dct32f: the same, but the inverse DCT is taken of the float weights (scaled per
    #: tensor into 10 bits, rounded once: no affine codes; see ``PreTransform``). With
    #: ``FORCE32`` params every transform block the encoder uses is one of our 32x32
    #: blocks under a plain DCT-II (unforced, libvvenc picks nearly all of them anyway)
    layout: str = "luma"
    target_pixels: int = 1 << 20
    max_width: int = 4096
    transpose: bool = False

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def args(self, qp: int) -> list[str]:
        out = ["-preset", self.preset, "-qp", str(qp), "-qpa", "0", "-g", "1"]
        if self.params:
            out += ["-vvenc-params", self.params]
        return out


@dataclass(frozen=True)
class Variant:
    label: str
    quant: Quant = field(default_factory=Quant)
    enc: Enc = field(default_factory=Enc)
    alloc: str = "one"  # one | step


# --------------------------------------------------------------------------- data


def load_weights(layers: Iterable[int] | None, minilm: bool = False) -> dict[str, np.ndarray]:
    """SmolLM2 decoder Linear weights of ``layers`` (None = all), or MiniLM-L6's matrices."""
    cache = Path(os.environ.get("TUNE_DATA", Path(tempfile.gettempdir()) / "tune"))
    if minilm:
        path = cache / "minilm.npz"
        if not path.exists():
            from tools.models import minilm_encoder_weights

            cache.mkdir(parents=True, exist_ok=True)
            np.savez(path, **minilm_encoder_weights())
        with np.load(path) as z:
            names = [n for n in z.files if layers is None or any(f"layer.{i}." in n for i in layers)]
            return {n: z[n] for n in names}
    path = cache / "smollm2_all.npz"
    if not path.exists():
        from tools.models import smollm2_decoder_linear_weights

        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **smollm2_decoder_linear_weights())
    with np.load(path) as z:
        names = [n for n in z.files if layers is None or int(n.split(".")[2]) in layers]
        return {n: z[n] for n in names}


def dither_q4(weights: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Break SmolLM2's Q4_1 lattice: add uniform noise of one level step per group of 32.

    The GGUF's weights take at most 16 values per row group of 32 (step = range / 15). A
    codec quantizing in the weight domain could profit from that lattice at high rates;
    dithered weights keep the statistics but lose the lattice, which tests whether it matters.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, x in weights.items():
        g = x.reshape(x.shape[0], -1, 32).astype(np.float64)
        step = (g.max(axis=2, keepdims=True) - g.min(axis=2, keepdims=True)) / 15.0
        out[name] = (g + rng.uniform(-0.5, 0.5, g.shape) * step).reshape(x.shape).astype(np.float32)
    return out


# --------------------------------------------------------------------------- one point


def clip_bits_for(qp: int) -> float:
    """Effective precision of the codec's noise at ``qp``, for ``clip="mse"``.

    VVC's quantizer step at 10-bit depth is 2**((qp − 4) / 6) code units; noise of that
    step is what a grid of 10 − log2(step) bits would add.
    """
    return float(min(10.0, max(1.0, 10.0 - (qp - 4) / 6.0)))


def _perms(w: np.ndarray, order: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(row, column) permutations that sort by RMS (``norm``: rows; ``norm2``: rows and columns)."""
    if order == "none":
        return None, None
    m = w.reshape(w.shape[0], -1).astype(np.float64)
    rows = np.argsort(np.sqrt((m * m).mean(axis=1)), kind="stable")
    if order == "norm":
        return rows, None
    if order == "norm2":
        return rows, np.argsort(np.sqrt((m * m).mean(axis=0)), kind="stable")
    raise ValueError(order)


def perm_bytes(n: int) -> int:
    """Bytes to store a permutation of n items as an enumerative code: ceil(log2 n! / 8)."""
    return math.ceil(math.lgamma(n + 1) / math.log(2) / 8) if n > 1 else 0


def quantize_for(w: np.ndarray, quant: Quant, qp: int) -> tuple[np.ndarray, Any, Grid, float, int]:
    """(codes matrix, params, grid, RMS scale, params bytes) of ``w`` under ``quant``."""
    cb = quant.clip_bits
    if cb == "auto":
        cb = clip_bits_for(qp)
    gran = quant.granularity
    if gran.startswith("auto"):  # "auto:40": tensor unless its 10-bit grid SNR is below 40 dB
        floor = float(gran.partition(":")[2] or 40)
        gran = "tensor" if quantize(w, granularity="tensor").info["grid_snr_db"] >= floor else "row"
    qz = quantize(w, bits=10, granularity=gran, group_size=quant.group_size,
                  clip=quant.clip, clip_bits=cb, param_dtype="auto")
    grid = Grid.of(tuple(w.shape), gran, quant.group_size)
    s = qz.params.scale.astype(np.float64)
    counts = np.broadcast_to(grid.cell_counts(), s.shape)
    rms = math.sqrt(float(np.sum(counts * s * s)) / max(1.0, float(np.sum(counts))))
    return qz.codes.reshape(grid.rows, grid.cols), qz.params, grid, rms, qz.params.nbytes


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _encode_decode(frame: np.ndarray, enc: Enc, qp: int, threads: int) -> tuple[bytes, np.ndarray, float]:
    """Encode one frame of 10-bit codes with ``enc``; (bitstream, decoded codes, CPU s)."""
    if enc.layout == "luma":
        raw = raw_frame(frame, PIX_FMT, DEPTH)
        height, width = frame.shape
    else:  # yuv: frame is (H + H/2, W) holding Y on top and Cb | Cr side by side below
        height, width = frame.shape[0] * 2 // 3, frame.shape[1]
        y = frame[:height]
        c = frame[height:]
        cb, cr = c[:, : width // 2], c[:, width // 2:]
        raw = (np.ascontiguousarray(y, "<u2").tobytes() + np.ascontiguousarray(cb, "<u2").tobytes()
               + np.ascontiguousarray(cr, "<u2").tobytes())
    t0 = _child_cpu()
    blob = ffmpeg.encode_frame(ENCODER, PIX_FMT, width, height, raw, enc.args(qp), "vvc",
                               threads=threads, what="tune")
    cpu = _child_cpu() - t0
    planes = _decode_planes(blob, width, height)
    if enc.layout == "luma":
        return blob, planes[0], cpu
    out = np.concatenate([planes[0], np.concatenate([planes[1], planes[2]], axis=1)], axis=0)
    return blob, out, cpu


def _decode_planes(blob: bytes, width: int, height: int) -> list[np.ndarray]:
    import av

    ctx = av.CodecContext.create("vvc", "r")
    frames = []
    for packet in [*ctx.parse(blob), *ctx.parse(None)]:
        frames.extend(ctx.decode(packet))
    frames.extend(ctx.decode(None))
    assert len(frames) == 1, len(frames)
    f = frames[0]
    out = []
    for i, p in enumerate(f.planes):
        h, w = (height, width) if i == 0 else (height // 2, width // 2)
        data = np.frombuffer(p, dtype="<u2")
        rows = np.lib.stride_tricks.as_strided(data, shape=(h, w), strides=(p.line_size, 2))
        out.append(rows.astype(np.uint16))
    return out


def _yuv_frames(m: np.ndarray, target_pixels: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Cut ``m`` into 4:2:0 frames whose Y, Cb and Cr planes all hold weights.

    A frame of width W (cols rounded up to 16) and luma height H takes H + H/2 matrix rows:
    H rows go to Y, the next H/2 rows are split in halves, the left half to Cb, the right
    to Cr. Returns ((row0, nrows), frame) pairs, frames shaped (H + H/2, W), edge-padded.
    """
    rows, cols = m.shape
    width = -(-cols // 16) * 16
    hy = max(16, (2 * target_pixels // (3 * width)) // 16 * 16)
    out = []
    r = 0
    while r < rows:
        left = rows - r
        h = hy if left >= hy + hy // 2 else max(16, _up(_up(2 * left, 3) // 3, 16))
        take = min(left, h + h // 2)
        block = m[r:r + take]
        pad = ((0, h + h // 2 - take), (0, width - cols))
        frame = np.pad(block, pad, mode="edge") if any(p for _, p in pad) else block
        out.append(((r, take), np.ascontiguousarray(frame)))
        r += take
    return out


_DCT_MID = 512.0
_DCT_N = 32


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (rows = basis functions)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def _block_dct(m: np.ndarray, inverse: bool, n: int = _DCT_N) -> np.ndarray:
    """2-D DCT (or its inverse) of each n x n block; sides must be multiples of n."""
    r, c = m.shape
    if r % n or c % n:
        raise ValueError(f"dct32 layout needs sides that are multiples of {n}, got {m.shape}")
    d = _dct_matrix(n)
    b = m.reshape(r // n, n, c // n, n).transpose(0, 2, 1, 3)
    out = d.T @ b @ d if inverse else d @ b @ d.T
    return out.transpose(0, 2, 1, 3).reshape(r, c)


def _up(n: int, a: int) -> int:
    return -(-n // a) * a


#: layouts whose pixels are the inverse block DCT of the float weights -> block size
FLOAT_DCT = {"dct32f": 32}
#: pretransform leaves this many code values free at each end of [0, 1023]
_DCT_MARGIN = 8


@dataclass(frozen=True)
class PreTransform:
    """Float weights -> pixels: ``pix = rint(512 + IDCT(w - mean) / scale)`` per n x n block.

    The matrix is zero-padded (after centering) to multiples of n; ``scale`` puts the
    largest IDCT value ``_DCT_MARGIN`` codes inside [0, 1023]. The weights are rounded once
    (in the IDCT domain). Decoding: ``DCT(decoded - 512) * scale + mean``, cropped; the
    encoder's step in pixel units is its step in units of ``scale`` in the weights
    (the DCT is orthonormal), so ``scale`` plays the affine scale's role in QP allocation.
    """

    pix: np.ndarray
    scale: float
    mean: float
    shape: tuple[int, int]
    n: int
    #: stored params: scale and mean as float32
    nbytes: int = 8

    @classmethod
    def of(cls, w: np.ndarray, n: int) -> PreTransform:
        m = w.reshape(w.shape[0], -1).astype(np.float64)
        mean = float(np.float32(m.mean()))
        r, c = m.shape
        padded = np.zeros((_up(r, n), _up(c, n)))
        padded[:r, :c] = m - mean
        y = _block_dct(padded, inverse=True, n=n)
        scale = float(np.float32(max(float(np.abs(y).max()), 1e-30) / (_DCT_MID - _DCT_MARGIN)))
        pix = np.clip(np.rint(_DCT_MID + y / scale), 0, 1023).astype(np.uint16)
        return cls(pix, scale, mean, (r, c), n)

    def decode(self, dec: np.ndarray) -> np.ndarray:
        back = _block_dct(dec.astype(np.float64) - _DCT_MID, inverse=False, n=self.n)
        r, c = self.shape
        return back[:r, :c] * self.scale + self.mean


def code_matrix(codes: np.ndarray, enc: Enc, qp: int, threads: int = 0,
                align: int = 8) -> tuple[int, np.ndarray, float]:
    """Code a codes matrix with ``enc`` at ``qp``: (bytes, decoded matrix, encoder CPU s).

    ``align``: frame sides (and frame boundaries in the matrix) are multiples of it.
    """
    m = codes.T.copy() if enc.transpose else codes
    if enc.layout == "dct32":
        center = float(np.rint(m.mean()))
        pix = np.clip(np.rint(_DCT_MID + _block_dct(m.astype(np.float64) - center, inverse=True)),
                      0, 1023).astype(np.uint16)
        nbytes, dec, cpu = code_matrix(pix, replace(enc, layout="luma", transpose=False), qp, threads)
        back = _block_dct(dec.astype(np.float64) - _DCT_MID, inverse=False) + center
        out = np.clip(np.rint(back), 0, 1023).astype(np.uint16)
        return nbytes, (out.T.copy() if enc.transpose else out), cpu
    rows, cols = m.shape
    out = np.empty_like(m)
    total, cpu = 0, 0.0
    if enc.layout == "yuv":
        for (r0, n), frame in _yuv_frames(m, enc.target_pixels):
            blob, dec, c = _encode_decode(frame, enc, qp, threads)
            out[r0:r0 + n] = dec[:n, :cols]
            total += len(blob)
            cpu += c
    else:
        geom = framing.plan(rows, cols, max_width=enc.max_width, max_height=4096,
                            target_pixels=enc.target_pixels, align=align, min_size=16)
        for k, frame in enumerate(framing.split(m, geom)):
            blob, dec, c = _encode_decode(frame, enc, qp, threads)
            framing.place(out, dec, geom, k, (0, rows, 0, cols))
            total += len(blob)
            cpu += c
    out = np.minimum(out, 1023)
    return total, (out.T.copy() if enc.transpose else out), cpu


class Bench:
    """Measures (bytes, squared error, CPU) per tensor/quantizer/encoder/QP, with a cache."""

    def __init__(self, weights: dict[str, np.ndarray], cache: Path, threads: int = 0) -> None:
        self.weights = weights
        self.n = sum(w.size for w in weights.values())
        self.signal = sum(float(np.vdot(w.astype(np.float64), w.astype(np.float64)))
                          for w in weights.values())
        self.cache_path = cache
        self.threads = threads
        self.cache: dict[str, dict[str, float]] = {}
        if cache.exists():
            for line in cache.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.cache[rec["k"]] = rec["v"]
        self._scales: dict[tuple[str, str], float] = {}
        self._pre: dict[tuple[str, str], PreTransform] = {}

    def _key(self, name: str, w: np.ndarray, quant: Quant, enc: Enc, qp: int) -> str:
        digest = hashlib.blake2b(w.tobytes(), digest_size=8).hexdigest()
        return f"{name}|{digest}|{quant.key()}|{enc.key()}|{qp}"

    def scale(self, name: str, quant: Quant) -> float:
        """RMS affine scale of a tensor (clip_bits auto: evaluated at QP 32)."""
        k = (name, quant.key())
        if k not in self._scales:
            self._scales[k] = quantize_for(self.weights[name], quant, 32)[3]
        return self._scales[k]

    def pretransform(self, name: str, n: int) -> PreTransform:
        k = (name, f"pretransform{n}")
        if k not in self._pre:
            self._pre[k] = PreTransform.of(self.weights[name], n)
        return self._pre[k]

    def qp_of(self, name: str, v: Variant, qp: int) -> int:
        if v.alloc == "one":
            return qp
        if v.enc.layout in FLOAT_DCT:
            s = self.pretransform(name, FLOAT_DCT[v.enc.layout]).scale
        else:
            s = self.scale(name, v.quant)
        off = 6.0 * math.log2(S_REF / s)
        return int(min(63, max(0, round(qp + off))))

    def point(self, name: str, v: Variant, qp: int) -> dict[str, float]:
        w = self.weights[name]
        key = self._key(name, w, v.quant, v.enc, qp)
        if key in self.cache:
            return self.cache[key]
        if v.enc.layout in FLOAT_DCT:
            return self._float_point(name, v, qp, key)
        t0 = time.process_time()
        rperm, cperm = _perms(w, v.quant.row_order)
        wq = w.reshape(w.shape[0], -1)
        wq = wq[rperm] if rperm is not None else wq
        wq = np.ascontiguousarray(wq[:, cperm]) if cperm is not None else wq
        codes, params, grid, _, pbytes = quantize_for(wq, v.quant, qp)
        pbytes += sum(perm_bytes(len(p)) for p in (rperm, cperm) if p is not None)
        qcpu = time.process_time() - t0
        nbytes, dec, cpu = code_matrix(codes, v.enc, qp, self.threads)
        win = window(tuple(wq.shape), None)
        rec = dequantize(dec, params, grid, win, "float32")
        grid_rec = dequantize(codes, params, grid, win, "float32")
        if cperm is not None:
            inv = np.argsort(cperm)
            rec, grid_rec = rec[:, inv], grid_rec[:, inv]
        if rperm is not None:
            inv = np.argsort(rperm)
            rec, grid_rec = rec[inv], grid_rec[inv]
        rec, grid_rec = rec.reshape(w.shape), grid_rec.reshape(w.shape)
        x = w.astype(np.float64)
        rec_d = {
            "video": nbytes, "params": pbytes, "sse": float(np.sum((x - rec) ** 2)),
            "grid_sse": float(np.sum((x - grid_rec) ** 2)), "cpu": cpu, "qcpu": qcpu,
        }
        self.cache[key] = rec_d
        with self.cache_path.open("a") as f:
            f.write(json.dumps({"k": key, "v": rec_d}) + "\n")
        return rec_d

    def _float_point(self, name: str, v: Variant, qp: int, key: str) -> dict[str, float]:
        """``point`` for the float pre-transform layouts (no affine stage, no permutations)."""
        w = self.weights[name]
        t0 = time.process_time()
        pre = self.pretransform(name, FLOAT_DCT[v.enc.layout])
        qcpu = time.process_time() - t0
        enc = replace(v.enc, layout="luma", transpose=False)
        nbytes, dec, cpu = code_matrix(pre.pix, enc, qp, self.threads, align=pre.n)
        x = w.reshape(pre.shape).astype(np.float64)
        rec_d = {
            "video": nbytes, "params": pre.nbytes, "sse": float(np.sum((x - pre.decode(dec)) ** 2)),
            "grid_sse": float(np.sum((x - pre.decode(pre.pix)) ** 2)), "cpu": cpu, "qcpu": qcpu,
        }
        self.cache[key] = rec_d
        with self.cache_path.open("a") as f:
            f.write(json.dumps({"k": key, "v": rec_d}) + "\n")
        return rec_d

    def total(self, v: Variant, qp: int) -> dict[str, float]:
        """bpw, SNR, grid SNR and encoder CPU of the whole set with reference QP ``qp``."""
        acc = {"video": 0.0, "params": 0.0, "sse": 0.0, "grid_sse": 0.0, "cpu": 0.0, "qcpu": 0.0}
        for name in self.weights:
            p = self.point(name, v, self.qp_of(name, v, qp))
            for k in acc:
                acc[k] += p[k]
        return {
            "qp": qp, "bpw": 8.0 * (acc["video"] + acc["params"]) / self.n,
            "params_bpw": 8.0 * acc["params"] / self.n,
            "snr": 10 * math.log10(self.signal / acc["sse"]),
            "grid_snr": 10 * math.log10(self.signal / max(acc["grid_sse"], 1e-300)),
            "cpu": acc["cpu"], "qcpu": acc["qcpu"],
        }

    def sweep(self, v: Variant, targets: tuple[float, ...], qp0: int = 32, step: int = 4,
              log: Callable[[str], None] | None = None) -> list[dict[str, float]]:
        """Points at QPs ``step`` apart until they bracket every target bpw."""
        pts = {qp0: self.total(v, qp0)}
        lo_t, hi_t = min(targets), max(targets)

        def bpws() -> tuple[float, float]:
            vals = [p["bpw"] for p in pts.values()]
            return min(vals), max(vals)

        def add(q: int) -> bool:
            try:
                pts[q] = self.total(v, q)
            except CodecError as exc:  # e.g. libvvenc via FFmpeg: an AU over W·H bytes fails
                if log:
                    log(f"    qp {q:>2} failed: {str(exc).splitlines()[0][:100]}")
                return False
            return True

        while bpws()[1] < hi_t and min(pts) - step >= 0 and add(min(pts) - step):
            pass
        while bpws()[0] > lo_t and max(pts) + step <= 63 and add(max(pts) + step):
            pass
        out = sorted(pts.values(), key=lambda p: p["bpw"])
        if log:
            for p in out:
                log(f"    qp {p['qp']:>2} bpw {p['bpw']:.3f} snr {p['snr']:.2f} "
                    f"grid {p['grid_snr']:.1f} cpu {p['cpu']:.1f}s")
        return out


def at_bpw(points: list[dict[str, float]], bpw: float) -> float:
    """SNR at ``bpw`` by linear interpolation between measured points (nan outside)."""
    xs = [p["bpw"] for p in points]
    ys = [p["snr"] for p in points]
    if not xs or bpw < xs[0] - 1e-9 or bpw > xs[-1] + 1e-9:
        return float("nan")
    return float(np.interp(bpw, xs, ys))


# --------------------------------------------------------------------------- levers


def _v(label: str, alloc: str = "one", **kw: Any) -> Variant:
    qkeys = {f for f in Quant.__dataclass_fields__}
    q = Quant(**{k: kw.pop(k) for k in list(kw) if k in qkeys})
    return Variant(label, q, Enc(**kw), alloc)


BASE = _v("row min-max, faster (untuned)")
#: -vvenc-params of the tuned encoder (dependent quantization needs sign hiding off)
DQ = "DepQuant=1:SignHideFlag=0"
#: encoder settings screened on top of the tuned base (each alone)
TOOL_PARAMS = (
    DQ,
    DQ + ":TransformSkip=0:BDPCM=0",
    DQ + ":TransformSkip=1:TransformSkipLog2MaxSize=5",
    DQ + ":ALF=0:CCALF=0",
    DQ + ":SAO=0",
    DQ + ":LoopFilterDisable=1",
    DQ + ":CTUSize=128",
    DQ + ":LFNST=1",
    DQ + ":MTS=1",
    DQ + ":MaxMTTDepthI=1",
    DQ + ":IBC=0:BDPCM=0",
    DQ + ":IntraEstDecBit=2",
    DQ + ":LambdaModifierI=0.8",
    DQ + ":LambdaModifierI=1.25",
)


#: the ``VvcCodec`` default ``-vvenc-params`` (llmc_format/codecs/video/codecs.py)
CODEC_DEFAULT = DQ + ":MinQTISlice=16:IntraEstDecBit=4:ALF=0:CCALF=0"
#: keys that make every luma CU and transform block exactly 32x32 under DCT-II in an
#: intra frame (frame sides multiples of 32): CTU 32 with no quad-tree split below 32 and
#: no binary/ternary splits (so CU = CTU), TB 32 (no implicit TU split), no explicit or
#: implicit MTS (DST-VII/DCT-VIII), no LFNST, ISP, transform skip, BDPCM; SBT is inter
#: only, off anyway. In-loop filters off too: deblocking and SAO would filter our block
#: edges after the transform. libvvenc's "CODING TOOL CFG" dump (FFmpeg -loglevel debug)
#: shows each of them set; ``--lever dctcheck`` measures which ones bind.
FORCE32_KEYS = ("CTUSize=32", "MinQTISlice=32", "MaxMTTDepthI=0", "Log2MaxTbSize=5", "MTS=0",
                "MTSImplicit=0", "LFNST=0", "ISP=0", "TransformSkip=0", "BDPCM=0", "SBT=0",
                "LoopFilterDisable=1", "SAO=0")
FORCE32 = ":".join(FORCE32_KEYS)
#: the codec default with the partition forced (MinQTISlice=32 replaces its 16)
CODEC_FORCE32 = DQ + ":IntraEstDecBit=4:ALF=0:CCALF=0:" + FORCE32


def tuned_base(label: str = "tuned", **kw: Any) -> Variant:
    """Per-tensor min-max scaling, equal-step QP allocation, dependent quantization."""
    opts: dict[str, Any] = {"granularity": "tensor", "params": DQ, **kw}
    return _v(label, "step", **opts)


def levers() -> dict[str, list[Variant]]:
    """The tables: each lever's first variant is its baseline."""
    return {
        "scaling": [
            BASE,
            _v("tensor min-max", granularity="tensor"),
            _v("group 128 min-max", granularity="group"),
            _v("row, clip mse (bits from QP)", clip="mse", clip_bits="auto"),
            _v("tensor, clip mse (bits from QP)", granularity="tensor", clip="mse", clip_bits="auto"),
        ],
        "alloc": [
            replace(BASE, label="row min-max, one QP"),
            replace(BASE, label="row min-max, equal step", alloc="step"),
            _v("tensor min-max, one QP", granularity="tensor"),
            _v("tensor min-max, equal step", "step", granularity="tensor"),
            _v("tensor clip mse, equal step", "step", granularity="tensor", clip="mse",
               clip_bits="auto"),
        ],
        "preset": [
            BASE,
            _v("fast", preset="fast"),
            _v("medium", preset="medium"),
        ],
        "tools": [tuned_base(label="tensor, equal step, faster", params="")]
        + [tuned_base(label=f"+ {p}", params=p) for p in TOOL_PARAMS],
        "layout": [
            tuned_base("tuned (tensor, equal step, DQ)"),
            tuned_base("+ row scaling where tensor grid SNR < 40 dB", granularity="auto:40"),
            tuned_base("+ rows sorted by RMS", row_order="norm"),
            tuned_base("+ rows and columns sorted by RMS", row_order="norm2"),
            tuned_base("+ inverse-DCT'd 32x32 blocks (research)", layout="dct32",
                       params=DQ + ":Log2MaxTbSize=5"),
        ],
        "dct": [
            tuned_base("tuned (codec default params)", params=CODEC_DEFAULT),
            tuned_base("+ forced 32x32 DCT-II blocks, no pre-transform", params=CODEC_FORCE32),
            tuned_base("+ inverse DCT of the codes (dct32), not forced", layout="dct32",
                       params=CODEC_DEFAULT),
            tuned_base("+ inverse DCT of the codes (dct32), forced", layout="dct32",
                       params=CODEC_FORCE32),
            tuned_base("+ inverse DCT of the float weights (dct32f), not forced", layout="dct32f",
                       params=CODEC_DEFAULT),
            tuned_base("+ inverse DCT of the float weights (dct32f), forced", layout="dct32f",
                       params=CODEC_FORCE32),
            tuned_base("+ dct32f, forced with CTU 64 (CU 64 or 32, TBs 32)", layout="dct32f",
                       params=CODEC_FORCE32.replace("CTUSize=32", "CTUSize=64")),
        ],
        "frames": [
            tuned_base("tuned (tensor, equal step, DQ)"),
            tuned_base("+ transposed", transpose=True),
            tuned_base("+ frames ~256 k px", target_pixels=1 << 18),
            tuned_base("+ weights in Y, Cb and Cr (4:2:0)", layout="yuv"),
        ],
    }


def table(bench: Bench, title: str, variants: list[Variant], targets: tuple[float, ...],
          log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Measure ``variants`` and print one table; returns its rows."""
    rows = []
    base: list[float] | None = None
    for v in variants:
        log(f"  {v.label}")
        pts = bench.sweep(v, targets, log=log)
        snrs = [at_bpw(pts, t) for t in targets]
        if base is None:
            base = snrs
        cpu = sum(p["cpu"] for p in pts) / len(pts)
        grid = min(p["grid_snr"] for p in pts)
        top = pts[-1]  # highest rate: where the 10-bit grid's own error weighs most
        grid_cost = -10 * math.log10(max(1e-12, 1 - 10 ** ((top["snr"] - top["grid_snr"]) / 10)))
        rows.append({"label": v.label, "snr": snrs, "delta": [a - b for a, b in zip(snrs, base, strict=True)],
                     "cpu": cpu, "grid_snr": grid, "grid_cost": grid_cost, "top_bpw": top["bpw"],
                     "params_bpw": pts[0]["params_bpw"], "points": pts})
    print(f"\n### {title} ({len(bench.weights)} matrices, {bench.n:,} weights)\n")
    head = " | ".join(f"SNR@{t:g} (gap, Δ)" for t in targets)
    print(f"| variant | {head} | enc CPU s/pt | params bpw | grid SNR | grid cost |")
    print("|---|" + "---|" * len(targets) + "---|---|---|---|")
    for r in rows:
        cells = " | ".join(f"{s:.2f} ({6.02 * t - s:.2f}, {d:+.2f})"
                           for s, t, d in zip(r["snr"], targets, r["delta"], strict=True))
        print(f"| {r['label']} | {cells} | {r['cpu']:.1f} | {r['params_bpw']:.3f} | "
              f"{r['grid_snr']:.1f} | {r['grid_cost']:.2f} dB @{r['top_bpw']:.1f} |")
    sys.stdout.flush()
    return rows


# --------------------------------------------------------------------------- probe


PROBE_KEYS = (
    "DepQuant=1", "DepQuant=1:SignHideFlag=0", "RDOQ=1", "RDOQ=0", "TransformSkip=0",
    "TransformSkip=0:BDPCM=0", "TransformSkip=1", "TransformSkip=1:TransformSkipLog2MaxSize=5",
    "ALF=0", "CCALF=0", "SAO=0", "LoopFilterDisable=1", "CTUSize=128", "LFNST=1", "MTS=1",
    "ISP=1", "MIP=1", "MRL=0", "BDPCM=0", "IBC=0", "LMChroma=0", "JointCbCr=1",
    "MaxMTTDepthI=0", "MaxMTTDepthI=1", "SelectiveRDOQ=0", "Log2MaxTbSize=5", "IntraEstDecBit=2",
    "LambdaModifierI=0.8", "IQPFactor=0.5", "LambdaFromQpEnable=1", "QuantThrVal=8",
    "IntraQPOffset=-3", "TS=1", "LMCS=0", "MaxTTLargeCTU=0", "DualITree=0",
)


def probe(weights: dict[str, np.ndarray], qp: int = 32) -> None:
    """Does each -vvenc-params key change the bitstream, and the decoded picture? (one matrix)."""
    name = next(n for n, w in weights.items() if w.shape == (576, 576))
    codes = quantize_for(weights[name], Quant(), qp)[0]
    base_blob = _blob(codes, Enc(), qp)
    base_pic = _decode_planes(base_blob, codes.shape[1], codes.shape[0])[0]
    print(f"\n### -vvenc-params probe ({name}, per-row codes, QP {qp}; "
          f"faster alone = {len(base_blob)} bytes)\n")
    print("| -vvenc-params | bytes | bitstream | decoded luma | enc CPU s |")
    print("|---|---|---|---|---|")
    for params in PROBE_KEYS:
        t0 = _child_cpu()
        try:
            blob = _blob(codes, Enc(params=params), qp)
        except Exception as exc:  # the encoder refuses the key (the reason is in stderr)
            lines = [ln for ln in str(exc).splitlines() if "Error" in ln or "error" in ln]
            print(f"| {params} | rejected | {(lines[0] if lines else '')[-70:]} | | |")
            continue
        cpu = _child_cpu() - t0
        pic = _decode_planes(blob, codes.shape[1], codes.shape[0])[0]
        same = "identical" if blob == base_blob else "differs"
        pic_same = "identical" if np.array_equal(pic, base_pic) else "differs"
        print(f"| {params} | {len(blob)} | {same} | {pic_same} | {cpu:.2f} |")
    sys.stdout.flush()


def _blob(codes: np.ndarray, enc: Enc, qp: int) -> bytes:
    raw = raw_frame(codes, PIX_FMT, DEPTH)
    h, w = codes.shape
    return ffmpeg.encode_frame(ENCODER, PIX_FMT, w, h, raw, enc.args(qp), "vvc", what="probe")


def dct_check(weights: dict[str, np.ndarray], qps: tuple[int, ...] = (4, 22, 32)) -> None:
    """Do the FORCE32 keys make the encoder's transform our 32x32 DCT? (one 576x576 matrix)

    Contents, each the inverse 32x32 block DCT of a coefficient pattern: the weights
    (``PreTransform``), a sparse pattern (8 random coefficients of ±200 pixel units per
    block, the rest zero), and that pattern shifted by 16 pixels (our blocks then straddle
    the codec's: a negative control). Each under the tuned quantizer (DepQuant) and a plain
    one (no DepQuant, no RDOQ: a dead-zone scalar quantizer). Errors are measured in our
    DCT domain, in units of the step 2^((QP+8)/6) pixel units (10-bit samples: 4x the 8-bit
    step 2^((QP-4)/6)). If every transform block is one of our blocks under DCT-II, the
    plain quantizer's error is its scalar error per coefficient (plus the integer
    transform's and the reconstruction's rounding): max |error| under a step, and the sparse
    pattern stays 8 nonzero coefficients per TB (few bytes). Any other partition or
    transform spreads each of our coefficients over many of its own: more bytes, errors
    that are sums of many quantization errors (no such bound). The leave-one-out rows drop
    one forcing key at a time from the forced tuned set (bitstream/decoded: does dropping
    it change anything on this content?).
    """
    name = next(n for n, w in weights.items() if w.shape == (576, 576))
    rng = np.random.default_rng(0)
    sparse = np.zeros((576, 576))
    blocks = sparse.reshape(18, 32, 18, 32)
    for i in range(18):
        for j in range(18):
            idx = rng.choice(1024, 8, replace=False)
            blocks[i, idx // 32, j, idx % 32] = rng.choice([-200.0, 200.0], 8)
    sparse_pix = np.clip(np.rint(_DCT_MID + _block_dct(sparse, True)), 0, 1023).astype(np.uint16)
    #: content -> (pixels, pixel shift applied before encoding and undone after decoding)
    contents = {"weights": (PreTransform.of(weights[name], 32).pix, 0), "sparse": (sparse_pix, 0),
                "sparse shifted 16 px": (sparse_pix, 16)}
    plain = "DepQuant=0:SignHideFlag=0:RDOQ=0:RDOQTS=0"
    sets = [("tuned, not forced", CODEC_DEFAULT), ("tuned, forced", CODEC_FORCE32),
            ("plain quantizer, not forced", CODEC_DEFAULT.replace(DQ, plain)),
            ("plain quantizer, forced", CODEC_FORCE32.replace(DQ, plain))]
    drop = [(f"forced without {k}", ":".join(p for p in CODEC_FORCE32.split(":") if p != k))
            for k in FORCE32_KEYS]
    print(f"\n### forced-partition check ({name}; error in our 32x32 DCT domain, in steps)\n")
    print("| content | QP | params | bytes | vs forced: bitstream, decoded | err RMS | "
          "max abs err | enc CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for cname, (pix, shift) in contents.items():
        coef = _block_dct(pix.astype(np.float64) - _DCT_MID, inverse=False)
        src = np.roll(pix, (shift, shift), (0, 1))
        for qp in qps:
            step = 2.0 ** ((qp + 8) / 6)
            ref: tuple[bytes, np.ndarray] | None = None
            for label, params in sets + (drop if qp == 22 and not shift else []):
                t0 = _child_cpu()
                try:
                    blob = _blob(src, Enc(params=params), qp)
                except CodecError as exc:
                    print(f"| {cname} | {qp} | {label} | failed: {str(exc).splitlines()[0][:60]} |"
                          " | | | |")
                    continue
                cpu = _child_cpu() - t0
                dec = np.roll(_decode_planes(blob, 576, 576)[0], (-shift, -shift), (0, 1))
                err = _block_dct(dec.astype(np.float64) - _DCT_MID, inverse=False) - coef
                vs = ""
                if label == "tuned, forced":
                    ref = (blob, dec)
                elif ref is not None and label.startswith("forced without"):
                    vs = (("identical" if blob == ref[0] else "differs") + ", "
                          + ("identical" if np.array_equal(dec, ref[1]) else "differs"))
                print(f"| {cname} | {qp} | {label} | {len(blob)} | {vs} | "
                      f"{float(np.sqrt(np.mean(err * err))) / step:.3f} | "
                      f"{float(np.abs(err).max()) / step:.2f} | {cpu:.2f} |")
    sys.stdout.flush()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lever", nargs="+", default=["scaling"],
                    help="nncodec scaling alloc preset tools layout dct frames probe dctcheck final full "
                         "| all")
    ap.add_argument("--layers", nargs="+", default=[str(i) for i in DEFAULT_LAYERS],
                    help="SmolLM2 decoder layers, or 'all'")
    ap.add_argument("--minilm", action="store_true", help="MiniLM-L6 matrices instead")
    ap.add_argument("--dither", action="store_true",
                    help="add one Q4_1 step of uniform noise to SmolLM2's weights (see dither_q4)")
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tune" / "cache.jsonl")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    layers = None if args.layers == ["all"] else [int(x) for x in args.layers]
    weights = load_weights(layers, args.minilm)
    if args.dither:
        weights = dither_q4(weights)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(weights, args.cache, args.threads)
    targets = tuple(args.targets)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    catalog = levers()
    catalog["final"] = final_variants()
    # the all-matrices comparison: untuned, the new codec default alone, fully tuned
    catalog["full"] = [catalog["final"][i] for i in (0, 1, 4)]
    names = ["nncodec", *catalog, "probe"] if args.lever == ["all"] else args.lever
    for lever in names:
        if lever == "probe":
            probe(weights)
            continue
        if lever == "dctcheck":
            dct_check(weights)
            continue
        if lever == "nncodec":
            nncodec_row(bench, targets, log)
            continue
        log(f"lever {lever}")
        table(bench, lever, catalog[lever], targets, log)


def _nncodec_point(bench: Bench, qp: int) -> dict[str, float]:
    """NNCodec 2.1.3 at ``qp``, one bitstream per matrix (as tools/baselines/nncodec_adapter.py)."""
    from tools.baselines.nncodec_adapter import compress_matrix

    key = f"nncodec|{len(bench.weights)}|{bench.n}|{next(iter(bench.weights))}|{qp}"
    if key not in bench.cache:
        nbytes, sse, cpu = 0, 0.0, 0.0
        for w in bench.weights.values():
            t0 = time.process_time()
            b, rec, _, _ = compress_matrix(w, qp)
            cpu += time.process_time() - t0
            nbytes += b
            sse += float(np.sum((w.astype(np.float64) - rec) ** 2))
        bench.cache[key] = {"bytes": nbytes, "sse": sse, "cpu": cpu}
        with bench.cache_path.open("a") as f:
            f.write(json.dumps({"k": key, "v": bench.cache[key]}) + "\n")
    r = bench.cache[key]
    return {"qp": qp, "bpw": 8.0 * r["bytes"] / bench.n,
            "snr": 10 * math.log10(bench.signal / r["sse"]), "cpu": r["cpu"]}


def nncodec_points(bench: Bench, targets: tuple[float, ...],
                   log: Callable[[str], None]) -> list[dict[str, float]]:
    """NNCodec points 2 QPs apart (qp_density 2: ~0.4 bpw) bracketing every target."""
    pts = {-15: _nncodec_point(bench, -15)}
    while max(p["bpw"] for p in pts.values()) < max(targets) and min(pts) > -60:
        pts[min(pts) - 2] = _nncodec_point(bench, min(pts) - 2)
    while min(p["bpw"] for p in pts.values()) > min(targets) and max(pts) < 20:
        pts[max(pts) + 2] = _nncodec_point(bench, max(pts) + 2)
    out = sorted(pts.values(), key=lambda p: p["bpw"])
    for p in out:
        log(f"    nncodec qp {p['qp']} bpw {p['bpw']:.3f} snr {p['snr']:.2f} cpu {p['cpu']:.1f}s")
    return out


def nncodec_row(bench: Bench, targets: tuple[float, ...], log: Callable[[str], None]) -> list[float]:
    """NNCodec's SNR at ``targets`` (its CPU includes its decode-free encode only)."""
    pts = nncodec_points(bench, targets, log)
    snrs = [at_bpw(pts, t) for t in targets]
    print(f"\n### NNCodec 2.1.3 reference ({len(bench.weights)} matrices)\n")
    print("| | " + " | ".join(f"SNR@{t:g} (gap)" for t in targets) + " | enc CPU s/pt |")
    print("|---|" + "---|" * len(targets) + "---|")
    cells = " | ".join(f"{s:.2f} ({6.02 * t - s:.2f})" for s, t in zip(snrs, targets, strict=True))
    print(f"| NNCodec | {cells} | {sum(p['cpu'] for p in pts) / len(pts):.1f} |")
    sys.stdout.flush()
    return snrs


def final_variants() -> list[Variant]:
    """Untuned vs tuned, each under both allocations."""
    return [
        replace(BASE, label="untuned, one QP"),
        _v("row + DepQuant (new VvcCodec default), one QP", params=DQ),
        replace(BASE, label="untuned, equal step", alloc="step"),
        replace(tuned_base("tuned (tensor + DepQuant), one QP"), alloc="one"),
        tuned_base("tuned (tensor + DepQuant), equal step"),
    ]


if __name__ == "__main__":
    main()
