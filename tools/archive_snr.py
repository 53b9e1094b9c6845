"""Overall stored bits per weight and SNR of the lossy tensors of .llmc archives.

Sums the per-tensor RD records the writer stores (``rd.bytes``, ``rd.mse``, ``rd.snr_db``)
over every video-coded tensor: SNR = 10·log10(Σ signal / Σ error) over all their weights,
bpw = 8·Σ bytes / Σ weights (bitstreams and stage params, not the index). To compare two
packs of one model, e.g. ``llmc pack M -o a.llmc --codec vvc --bpw 3`` with and without
``--transform dct``:

    python -m tools.archive_snr a.llmc b.llmc
"""

from __future__ import annotations

import math
import sys

from llmc_format.container.reader import Reader

VIDEO = ("vvc", "hevc", "av1")


def summary(path: str) -> tuple[int, float, float]:
    """(lossy weights, stored bits per weight, SNR dB) of one archive."""
    signal = error = 0.0
    nbytes = n = 0
    with Reader(path) as r:
        for name in r.keys():
            rd = r.tensor(name).rd
            if not rd or rd.get("codec") not in VIDEO or "mse" not in rd:
                continue
            numel = r.tensor(name).numel
            error += rd["mse"] * numel
            signal += rd["mse"] * numel * 10 ** (rd["snr_db"] / 10)
            nbytes += rd["bytes"]
            n += numel
    if not n or error <= 0:
        return n, 0.0, math.inf
    return n, 8 * nbytes / n, 10 * math.log10(signal / error)


def main() -> None:
    for path in sys.argv[1:]:
        n, bpw, snr = summary(path)
        print(f"{path}: {n} lossy weights, {bpw:.4f} bits/weight stored, SNR {snr:.3f} dB")


if __name__ == "__main__":
    main()
