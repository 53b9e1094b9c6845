"""Quantization: the array stages that turn float tensors into codec samples.

``affine`` maps float tensors to integer codes (per row, group or tensor) and ``blockdct``
to codes of their block-wise inverse DCT; both dequantizations are normative (see their
modules). Baselines that never go in a file (round-to-nearest) live in ``tools/baselines``.
"""

from llmc_format.quant.affine import AffineCodec, AffineParams, dequantize, quantize

__all__ = ["AffineCodec", "AffineParams", "dequantize", "quantize"]
