"""repack carries the error against the original forward; verify --against tells an
intact repacked archive (lossy within its estimated error) from a damaged one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.metrics import versus_original
from llmc_format.pipeline.target import Target, repack
from llmc_format.pipeline.verify import verify


def _model(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((256, 256)).astype(np.float32)
         for i in range(3)}
    t["model.norm.weight"] = np.ones(256, np.float32)
    save_file(t, str(path))
    return path


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("repack")
    src = _model(d / "m.safetensors", 0)
    a = d / "a.llmc"
    try:
        llmc_format.pack(src, a, codec="vvc", bpw=3)
    except llmc_format.LlmcError as exc:
        pytest.skip(f"no VVC encoder: {exc}")
    b = d / "b.llmc"
    summary = repack(a, b, Target.parse(bpw=2))
    assert summary["versus_original"]["estimate"] is True
    return src, a, b


def test_repack_records_error_against_the_original(packed: tuple[Path, Path, Path]) -> None:
    src, a, b = packed
    with llmc_format.safe_open(a) as fa, llmc_format.safe_open(b) as fb:
        for name in fb.keys():
            rd_b = fb.info(name)["rd"] or {}
            if "prior_mse" not in rd_b:
                continue
            rd_a = fa.info(name)["rd"]
            assert rd_b["prior_mse"] == pytest.approx(rd_a["mse"])  # what a carried
            est = versus_original(rd_b)
            # measured against the original: the estimate is within a fraction of a dB
            from safetensors.numpy import load_file

            orig = load_file(str(src))[name].astype(np.float64)
            err = ((orig - fb.get_tensor(name)) ** 2).mean()
            real = 10 * np.log10((orig ** 2).mean() / err)
            assert abs(est["snr_db"] - real) < 0.5
            assert est["snr_db"] < rd_b["snr_db"]  # worse than against the input archive


def test_verify_against_the_original_accepts_an_intact_repack(packed: tuple[Path, Path, Path],
                                                              tmp_path: Path) -> None:
    src, _, b = packed
    report = verify(b, against=src)
    assert report.ok
    assert any(t.estimate for t in report.tensors)
    r = CliRunner().invoke(app, ["verify", str(b), "--against", str(src)])
    assert r.exit_code == 0 and "lossy within their recorded error" in r.output
    other = _model(tmp_path / "other.safetensors", 1)  # a different model: intact, mismatch
    r = CliRunner().invoke(app, ["verify", str(b), "--against", str(other)])
    assert r.exit_code == 1
    assert "damaged" not in r.output.splitlines()[-1] and "intact but not matching" in r.output


def test_repack_command_reports_quality_against_the_original(
        packed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, a, _ = packed
    out = tmp_path / "c.llmc"
    r = CliRunner().invoke(app, ["repack", str(a), "-o", str(out), "--bpw", "2.5"])
    assert r.exit_code == 0, r.output
    assert "against the original model (estimate" in r.output
    r = CliRunner().invoke(app, ["repack", str(a), "-o", str(tmp_path / "d.llmc"), "--bpw", "4"])
    assert "re-coding cannot recover" in r.output
    r = CliRunner().invoke(app, ["repack", str(a), "-o", str(tmp_path / "e.llmc"), "--bpw", "4",
                                 "-q"])  # -q: errors only, no warning
    assert r.exit_code == 0 and r.output == ""
