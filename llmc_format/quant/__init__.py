"""Quantization: the ``affine`` pipeline stage and the round-to-nearest baseline.

``affine`` maps float tensors to integer codes for the video codecs (its dequantization is
normative, see ``affine.py``); ``rtn`` is a benchmark baseline that never goes in a file.
"""

from llmc_format.quant.affine import AffineCodec, AffineParams, dequantize, quantize
from llmc_format.quant.metrics import mse, snr_db
from llmc_format.quant.rtn import RtnResult, rtn_quantize

__all__ = [
    "AffineCodec",
    "AffineParams",
    "RtnResult",
    "dequantize",
    "mse",
    "quantize",
    "rtn_quantize",
    "snr_db",
]
