"""The one-line-error contract for hostile inputs (issue 17): every failure is one line on
stderr with exit 3 (1 only for verify findings, 2 for usage), names are printed escaped,
recorded numbers are validated before use. Each case printed a traceback (or exited 0
with a wrong result) before."""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from fuzz.harness import ArchiveModel
from llmc_format.cli import app, printable

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r: object, code: int = 3) -> str:
    out = r.output  # type: ignore[attr-defined]
    assert r.exit_code == code, out  # type: ignore[attr-defined]
    assert "Traceback" not in out and "internal error" not in out, out
    return out


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tensor names with rich markup, a terminal escape and a newline."""
    p = tmp_path_factory.mktemp("names") / "names.llmc"
    llmc_format.save_file({"x[/]": np.ones(3, np.float32), "[bold]b": np.ones(2, np.float32),
                           "esc\x1b[2Jred\nforged": np.zeros(2, np.float32)}, p, jobs=1)
    return p


@pytest.fixture(scope="module")
def targeted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small --bpw 3 VVC archive: it carries RD samples per lossy tensor."""
    from llmc_format.io.memory import MemorySource
    from llmc_format.pipeline.policy import Policy
    from llmc_format.pipeline.target import Target, pack_to_target

    rng = np.random.default_rng(3)
    p = tmp_path_factory.mktemp("rd") / "rd.llmc"
    src = MemorySource({"a.weight": (rng.standard_normal((64, 256)) * 0.02).astype(np.float32),
                        "b.weight": (rng.standard_normal((64, 256)) * 0.05).astype(np.float32),
                        "norm": np.ones(256, np.float32)})
    pack_to_target(src, p, Target.parse(bpw=3.0), policy=Policy(codec="vvc", min_lossy_numel=1024,
                                                                preset="faster"),
                   jobs=1, weighting="mse")
    return p


def forged(src: Path, out: Path, lie: Callable[[ArchiveModel], None]) -> Path:
    m = ArchiveModel.parse(src.read_bytes())
    lie(m)
    out.write_bytes(m.serialize())
    return out


def test_markup_and_escapes_in_names_are_printed_escaped(named: Path) -> None:
    r = run("inspect", named)
    assert r.exit_code == 0, r.output
    assert "x[/]" in r.output and "[bold]b" in r.output
    assert "\x1b" not in r.output and "\\x1b" in r.output
    r = run("verify", named)
    assert r.exit_code == 0 and "OK: 3 tensors" in r.output
    r = run("extract", named, "x[/", "-o", named.parent / "o")  # error message names it
    assert "x[/" in one_line_error(r)


def test_markup_in_a_damaged_tensor_name_is_a_verify_finding(named: Path, tmp_path: Path) -> None:
    def lie(m: ArchiveModel) -> None:
        t = next(t for t in m.tensor_dicts() if t["name"] == "x[/]")
        t["digest"]["decoded"] ^= 1

    bad = forged(named, tmp_path / "bad.llmc", lie)
    r = run("verify", bad)
    assert r.exit_code == 1 and "tensor x[/]:" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("command", ["inspect", "verify", "unpack", "extract", "repack"])
def test_a_directory_as_the_archive_is_one_line(command: str, tmp_path: Path) -> None:
    args = {"unpack": ["-o", tmp_path / "o"], "extract": ["w"],
            "repack": ["-o", tmp_path / "o.llmc", "--bpw", "2"]}.get(command, [])
    r = run(command, tmp_path, *args)
    assert "is a directory" in one_line_error(r, 1 if command == "verify" else 3)


def test_output_under_a_missing_directory_or_onto_a_directory(named: Path, tmp_path: Path) -> None:
    r = run("extract", named, "x[/]", "-o", tmp_path / "missing" / "x")
    assert "no such directory" in one_line_error(r)
    (tmp_path / "d.npy").mkdir()  # a directory: the tensor goes in it, as cp would put it
    r = run("extract", named, "x[/]", "-o", tmp_path / "d.npy", "--force")
    assert r.exit_code == 0 and [p.name for p in (tmp_path / "d.npy").iterdir()] == ["x.npy"]
    r = run("pack", named, "-o", tmp_path / "missing" / "x.llmc")
    assert "No such file or directory" in one_line_error(r)


def test_deep_json_config_is_not_a_traceback(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    model = tmp_path / "m"
    model.mkdir()
    save_file({"w": np.ones((4, 4), np.float32)}, model / "model.safetensors")
    (model / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    arc = tmp_path / "m.llmc"
    assert run("pack", model, "-o", arc, "-q").exit_code == 0
    for fmt in ("gguf", "safetensors"):
        r = run("unpack", arc, "-o", tmp_path / fmt, "--format", fmt, "--dtype", "bf16", "-q")
        assert r.exit_code == 0, r.output


def test_a_bug_is_still_one_line_with_exit_3(named: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmc_format.pipeline.inspect as inspect_module

    def boom(path: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(inspect_module, "describe", boom)
    r = run("inspect", named)
    assert r.exit_code == 3 and "internal error: ZeroDivisionError: boom" in r.output
    assert "Traceback" not in r.output


def test_disk_full_is_exit_3_naming_the_path(named: Path, tmp_path: Path) -> None:
    """A file-size limit stands in for a full disk: the write fails with an OSError."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    big = tmp_path / "big.llmc"
    rng = np.random.default_rng(0)
    llmc_format.save_file({"w": rng.standard_normal((64, 256)).astype(np.float32)}, big, jobs=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "llmc_format.cli", "extract", str(big), "w",
                           "-o", str(tmp_path / "w")], capture_output=True, text=True,
                          preexec_fn=limit, env=env, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "w.npy: cannot write" in done.stderr and not (tmp_path / "w.npy").exists()


def _lie_rd(change: Callable[[dict], None]) -> Callable[[ArchiveModel], None]:
    def lie(m: ArchiveModel) -> None:
        t = next(t for t in m.tensor_dicts() if t["name"] == "a.weight")
        change(t["rd"])
    return lie


def test_nan_rd_samples_make_repack_a_typed_error(targeted: Path, tmp_path: Path) -> None:
    def nan(rd: dict) -> None:
        rd["samples"] = [[q, math.nan, m] for q, _, m in rd["samples"]]

    bad = forged(targeted, tmp_path / "nan.llmc", _lie_rd(nan))
    out = tmp_path / "out.llmc"
    r = run("repack", bad, "-o", out, "--bpw", "2", "-q")
    assert "a.weight" in one_line_error(r) and "invalid RD record" in r.output
    assert not out.exists()


@pytest.mark.parametrize("change", [
    lambda rd: rd.update(qp="thirty"),
    lambda rd: rd.update(samples=[[30, 1.0]]),
    lambda rd: rd.update(samples=[[30, 1.0, 1e-6], [30, 2.0, 1e-6]]),
    lambda rd: rd.update(signal_energy=math.inf),
])
def test_malformed_rd_records_in_inspect_are_warnings(targeted: Path, tmp_path: Path,
                                                      change: Callable[[dict], None]) -> None:
    bad = forged(targeted, tmp_path / "bad.llmc", _lie_rd(change))
    for args in ([], ["--rd"], ["--json"], ["--rd", "--plot", tmp_path / "p.png"]):
        r = run("inspect", bad, *args)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        if "--json" not in args:
            assert "RD record ignored" in r.output
    r = run("repack", bad, "-o", tmp_path / "o.llmc", "--bpw", "2", "-q")
    assert "invalid RD record" in one_line_error(r)


def test_malformed_rd_summary_and_codec_config(targeted: Path, tmp_path: Path) -> None:
    def summary(m: ArchiveModel) -> None:
        m.obj["metadata"]["rd"] = {"target": "bpw", "passes": "many"}

    bad = forged(targeted, tmp_path / "summary.llmc", summary)
    r = run("inspect", bad, "--rd")
    assert r.exit_code == 0 and "RD summary not shown" in r.output, r.output

    def bits(m: ArchiveModel) -> None:
        t = next(t for t in m.tensor_dicts() if t["name"] == "a.weight")
        t["pipeline"][-1]["pix_fmt"] = "rgb48"
        t["pipeline"][-1]["bits"] = "x"

    r = run("repack", forged(targeted, tmp_path / "bits.llmc", bits), "-o",
            tmp_path / "o.llmc", "--bpw", "2", "-q")
    assert "bits" in one_line_error(r)
    qp = tmp_path / "qp.llmc"  # affine + vvc: what --raw extracts
    w = (np.random.default_rng(1).standard_normal((64, 256)) * 0.02).astype(np.float32)
    llmc_format.save_file({"a.weight": w}, qp, codec="vvc", qp=30, jobs=1, min_lossy_numel=1)
    r = run("extract", forged(qp, tmp_path / "qpbad.llmc", bits), "a.weight", "--raw", "-o",
            tmp_path / "a")
    assert "bits" in one_line_error(r)


def test_printable_escapes_controls_only() -> None:
    assert printable("model.layers.0.é") == "model.layers.0.é"
    assert printable("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb\\nc\\u202ed"


def test_repair_prints_paths_escaped(named: Path, tmp_path: Path) -> None:
    """``repack --repair`` names the archive and OUTPUT as given, which may hold escapes,
    newlines or rich markup: printed escaped, never interpreted."""
    hostile = tmp_path / "[bold]a\x1b[2J\nb.llmc"
    hostile.write_bytes(named.read_bytes())
    out = tmp_path / "o[red]ut\r.llmc"
    r = run("repack", hostile, "-o", out, "--repair")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\r" not in r.output
    assert r.output.count("\n") == 1  # one line, no forged second one
    assert printable(hostile) in r.output and printable(out) in r.output
    assert not out.exists()  # nothing to repair: nothing written


def test_codec_help_lists_installed_codecs_whatever_argv() -> None:
    """The installed codecs are looked up when the help is drawn, not from sys.argv (which
    here is pytest's)."""
    for flag in ("-h", "--help"):
        r = run("pack", flag)
        assert r.exit_code == 0 and "Installed:" in r.output, r.output
    r = run("verify", "x.llmc", "--signature", "x.sig")
    one_line_error(r, 2)
    assert "--signature and --public-key go together" in r.output
