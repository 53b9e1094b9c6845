"""NNCodec (Fraunhofer HHI's MPEG-7 NNC / DeepCABAC) as a baseline for lossy weight coding.

Install (no dependencies: its declared ones would pull torchvision, OpenCV, pandas,
scikit-learn and a ``numpy<2`` pin, none of which the coding path uses)::

    pip install --no-deps nncodec==2.1.3

It builds a C++ extension (deepCABAC) with the system g++ in about a minute.

NNCodec's ``nnc.compression`` module imports its training/evaluation framework at import
time (model zoo, datasets, torchvision...). ``compress``/``decompress`` on a dict of numpy
arrays never touch it, so :func:`_nnc` registers empty placeholder modules for that
framework before importing. Do not use NNCodec's ``compress_model`` in the same process.

Run the benchmark (SmolLM2 decoder Linear weights, weighted SNR, all-in bits/weight)::

    python -m tools.baselines.nncodec_adapter \
        --qps -12 -15 -17 -21   # ~2.0, 2.6, 3.0, 3.9 bpw on all 210 matrices
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from llmc_format.errors import CodecError, EncoderMissingError
from tools.baselines import snr_db

NNCODEC_PIP = "pip install --no-deps nncodec==2.1.3"
_FRAMEWORK_SUBMODULES = ("tensorflow_model", "pytorch_model", "use_case_init")


def _nnc() -> Any:
    """Import ``nncodec.nnc`` without its heavy, unused training framework."""
    if importlib.util.find_spec("nncodec") is None:
        raise EncoderMissingError(f"nncodec is not installed; install it with: {NNCODEC_PIP}")
    if "nncodec.framework" not in sys.modules:
        framework = types.ModuleType("nncodec.framework")
        framework.__doc__ = "placeholder: llmc uses only nncodec's tensor coding path"
        for sub in _FRAMEWORK_SUBMODULES:
            module = types.ModuleType(f"nncodec.framework.{sub}")
            setattr(framework, sub, module)
            sys.modules[module.__name__] = module
        sys.modules["nncodec.framework"] = framework
    from nncodec import nnc

    return nnc


def compress_dict(
    weights: Mapping[str, np.ndarray], qp: int, **options: Any
) -> tuple[int, dict[str, np.ndarray], float, float]:
    """Code several matrices in one NNC bitstream and decode it back.

    Returns (bitstream bytes, name -> float32 reconstruction, encode s, decode s).
    ``qp`` is NNCodec's weight QP (qp_density 2: 4 QP steps halve the step size, so one
    QP maps to different rates on differently scaled tensors). ``options`` go to
    ``nnc.compress`` (e.g. ``use_dq``, ``param_opt``, ``row_skipping``, ``qp_density``).
    All arrays must be 2-D or more: NNCodec codes 1-D tensors at a separate, much finer
    ``nonweight_qp``, which would silently mix two rate points.
    """
    nnc = _nnc()
    params: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if w.ndim < 2:
            raise CodecError(f"nncodec baseline: tensor {name!r} is {w.ndim}-D, need >= 2-D")
        params[name] = np.ascontiguousarray(w, dtype=np.float32)
    t0 = time.perf_counter()
    bitstream = nnc.compress(
        params, bitstream_path=None, qp=int(qp), return_bitstream=True, verbose=False, **options
    )
    t1 = time.perf_counter()
    decoded = nnc.decompress(bytearray(bitstream), verbose=False)
    t2 = time.perf_counter()
    recon: dict[str, np.ndarray] = {}
    for name, w in params.items():
        if name not in decoded:
            raise CodecError(f"nncodec baseline: tensor {name!r} missing from decoded stream")
        rec = np.asarray(decoded[name], dtype=np.float32).reshape(w.shape)
        recon[name] = rec
    return len(bitstream), recon, t1 - t0, t2 - t1


def compress_matrix(
    w: np.ndarray, qp: int, **options: Any
) -> tuple[int, np.ndarray, float, float]:
    """Code one matrix in its own NNC bitstream; returns (bytes, float32 recon, enc s, dec s)."""
    nbytes, recon, enc_s, dec_s = compress_dict({"w": w}, qp, **options)
    return nbytes, recon["w"], enc_s, dec_s


def sweep(
    weights: Mapping[str, np.ndarray], qps: list[int], **options: Any
) -> list[dict[str, float]]:
    """For each QP, code every matrix in its own bitstream; return bpw/SNR/time rows."""
    n_weights = sum(w.size for w in weights.values())
    rows: list[dict[str, float]] = []
    for qp in qps:
        total_bytes = 0
        enc_total = dec_total = 0.0
        originals: list[np.ndarray] = []
        recons: list[np.ndarray] = []
        for w in weights.values():
            nbytes, rec, enc_s, dec_s = compress_matrix(w, qp, **options)
            total_bytes += nbytes
            enc_total += enc_s
            dec_total += dec_s
            originals.append(w)
            recons.append(rec)
        rows.append(
            {
                "qp": qp,
                "bpw": 8.0 * total_bytes / n_weights,
                "snr_db": snr_db(originals, recons),
                "enc_s": enc_total,
                "dec_s": dec_total,
                "bytes": total_bytes,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print NNCodec's rate/SNR table on SmolLM2's decoder Linear weights."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=30, help="first N decoder layers")
    parser.add_argument("--qps", type=int, nargs="+", default=[-27, -29, -31, -35])
    parser.add_argument("--row-skipping", action="store_true")
    args = parser.parse_args(argv)

    from tools.models import load_smollm2, smollm2_decoder_linear_weights

    model, _ = load_smollm2()
    weights = smollm2_decoder_linear_weights(model, layers=range(args.layers))
    del model
    n = sum(w.size for w in weights.values())
    print(f"nncodec 2.1.3 on {len(weights)} SmolLM2 matrices ({n:,} weights), one stream each")
    print(f"{'qp':>5} {'bpw':>6} {'SNR dB':>7} {'enc s':>7} {'dec s':>7} {'enc Mw/s':>9}")
    for row in sweep(weights, args.qps, row_skipping=args.row_skipping):
        print(
            f"{row['qp']:>5} {row['bpw']:6.3f} {row['snr_db']:7.2f} {row['enc_s']:7.1f} "
            f"{row['dec_s']:7.1f} {n / row['enc_s'] / 1e6:9.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
