"""A QP the user gives that the encoder refuses: coded at the finest QP it accepts, said so
(libvvenc refuses the finest QPs on full-range codes, whatever its parameters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from llmc_format.cli import app
from llmc_format.container.reader import Reader
from llmc_format.errors import EncoderRefusedError
from llmc_format.pipeline.pack import encode_one
from llmc_format.pipeline.policy import Policy


def _weights(seed: int = 0) -> np.ndarray:
    # Gaussian weights: affine codes fill the 10-bit range, which libvvenc cannot code at QP 0
    return np.random.default_rng(seed).standard_normal((128, 128)).astype(np.float32)


def _pipeline(qp: int) -> list[dict]:
    return Policy(codec="vvc", qp=qp).pipeline("w", "float32", (128, 128))


def test_refused_qp_fails_in_one_line_without_the_fallback() -> None:
    with pytest.raises(EncoderRefusedError) as info:
        encode_one("w", _weights(), _pipeline(0))
    assert "\n" not in str(info.value) and "libvvenc failed" in str(info.value)


def test_fallback_codes_at_the_finest_accepted_qp() -> None:
    packed = encode_one("w", _weights(), _pipeline(0), coarser_on_failure=True)
    qp = packed.rd["qp"]
    assert packed.rd["qp_requested"] == 0 and qp > 0
    assert packed.encoded.pipeline[-1]["qp"] == qp  # what is stored is what was coded
    with pytest.raises(EncoderRefusedError):  # the QP just below is refused: the finest
        encode_one("w", _weights(), _pipeline(qp - 1))
    assert packed.rd["snr_db"] > 30


def test_an_accepted_qp_is_kept_and_not_marked() -> None:
    packed = encode_one("w", _weights(), _pipeline(30), coarser_on_failure=True)
    assert packed.rd["qp"] == 30 and "qp_requested" not in packed.rd


def test_cli_pack_warns_and_records_the_qp_used(tmp_path: Path) -> None:
    src = tmp_path / "model.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": _weights(1),
               "model.norm.weight": np.ones(128, np.float32)}, str(src))
    out = tmp_path / "a.llmc"
    r = CliRunner().invoke(app, ["pack", str(src), "-o", str(out), "--codec", "vvc", "--qp", "0",
                                 "--min-lossy-numel", "1024"])
    assert r.exit_code == 0, r.output
    assert "refused the asked QP for 1 tensor(s)" in r.output
    with Reader(out) as rd:
        e = rd.tensor("model.layers.0.mlp.up_proj.weight")
        assert e.rd["qp_requested"] == 0 and e.pipeline[-1]["qp"] == e.rd["qp"] > 0
