"""HQQ (Half-Quadratic Quantization) as a baseline: group-wise affine quantization, no data.

Install (its declared deps are light, but the sdist's install hook tries to build CUDA
kernels unless told not to; torch is not declared so nothing pulls a CUDA torch)::

    DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1 einops==0.8.2 \
        termcolor==3.3.0

Settings mirror ``hqq_base_quant_config`` (what HQQLinear uses): groups of 64 along the
input dimension (axis=1), proximal optimization of scale/zero on, zero rounded only at
4 bits, and scale and zero stored in float16. The reconstruction is computed from those
float16 values so the rate we count is the rate we measure.

Rate, "all-in": ``nbits + 2·16/group_size`` bits per weight (codes plus an fp16 scale and
zero per group). ``packed_bpw`` is what HQQ's own bit-packing stores, which is more at 3
bits (ten 3-bit codes per int32 → 3.2 bits).

    python -m tools.baselines.hqq_adapter --layers 4
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Mapping

import numpy as np

from llmc_format.errors import CodecError, EncoderMissingError
from tools.baselines import snr_db

HQQ_PIP = "DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1 einops==0.8.2 termcolor==3.3.0"
META_BITS_PER_GROUP = 2 * 16  # fp16 scale + fp16 zero


def _quantizer() -> type:
    if importlib.util.find_spec("hqq") is None:
        raise EncoderMissingError(f"hqq is not installed; install it with: {HQQ_PIP}")
    from hqq.core.quantize import Quantizer

    return Quantizer


def quantize_matrix(
    w: np.ndarray, nbits: int, group_size: int = 64, name: str = "w"
) -> tuple[np.ndarray, float, float, float]:
    """HQQ-quantize a 2-D matrix and dequantize it on CPU.

    Returns (float32 reconstruction, all-in bpw, packed bpw, seconds).
    """
    import torch

    quantizer = _quantizer()
    if w.ndim != 2 or w.size % group_size:
        raise CodecError(
            f"hqq baseline: tensor {name!r} of shape {w.shape} is not a 2-D matrix "
            f"divisible into groups of {group_size}"
        )
    t0 = time.perf_counter()
    tensor = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    w_q, meta = quantizer.quantize(
        tensor,
        nbits=nbits,
        channel_wise=True,
        group_size=group_size,
        optimize=True,
        round_zero=nbits == 4,
        axis=1,
        bitpack=True,
        device="cpu",
    )
    packed_bytes = w_q.numel() * w_q.element_size()
    # Stored metadata is fp16: reconstruct from the rounded values we would store.
    meta["scale"] = meta["scale"].to(torch.float16).float()
    meta["zero"] = meta["zero"].to(torch.float16).float()
    meta["compute_dtype"] = torch.float32
    recon = quantizer.dequantize(w_q, meta).float().numpy().astype(np.float32, copy=False)
    seconds = time.perf_counter() - t0
    n_groups = w.size // group_size
    all_in_bpw = nbits + META_BITS_PER_GROUP / group_size
    packed_bpw = (8 * packed_bytes + META_BITS_PER_GROUP * n_groups) / w.size
    return recon.reshape(w.shape), all_in_bpw, packed_bpw, seconds


def sweep(
    weights: Mapping[str, np.ndarray], nbits_list: list[int], group_size: int = 64
) -> list[dict[str, float]]:
    """Quantize every matrix at each bit width; return bpw/SNR/time rows."""
    n_weights = sum(w.size for w in weights.values())
    rows = []
    for nbits in nbits_list:
        recons = []
        seconds = 0.0
        packed_bits = 0.0
        all_in = 0.0
        for name, w in weights.items():
            rec, all_in, packed_bpw, sec = quantize_matrix(w, nbits, group_size, name=name)
            recons.append(rec)
            seconds += sec
            packed_bits += packed_bpw * w.size
        rows.append(
            {
                "nbits": nbits,
                "bpw": all_in,
                "packed_bpw": packed_bits / n_weights,
                "snr_db": snr_db(list(weights.values()), recons),
                "seconds": seconds,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print HQQ's rate/SNR table on SmolLM2's decoder Linear weights."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=30, help="first N decoder layers")
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--group-size", type=int, default=64)
    args = parser.parse_args(argv)

    import torch

    from tools.models import load_smollm2, smollm2_decoder_linear_weights

    torch.set_num_threads(2)
    model, _ = load_smollm2()
    weights = smollm2_decoder_linear_weights(model, layers=range(args.layers))
    del model
    n = sum(w.size for w in weights.values())
    print(f"hqq g{args.group_size} on {len(weights)} SmolLM2 matrices ({n:,} weights)")
    print(f"{'bits':>4} {'bpw':>6} {'packed':>7} {'SNR dB':>7} {'sec':>6}")
    for row in sweep(weights, args.nbits, args.group_size):
        print(
            f"{row['nbits']:>4} {row['bpw']:6.3f} {row['packed_bpw']:7.3f} "
            f"{row['snr_db']:7.2f} {row['seconds']:6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
