"""``llmc inspect`` layout: full names at 80 columns and through a pipe, filter, sort."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.inspect_view import select, weighting_words
from llmc_format.naming import natural_key

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def smollm2_names() -> list[str]:
    """The 273 tensor names of SmolLM2-135M as Hugging Face spells them."""
    names = ["model.embed_tokens.weight"]
    for i in range(30):
        names += [f"model.layers.{i}.input_layernorm.weight",
                  f"model.layers.{i}.post_attention_layernorm.weight"]
        names += [f"model.layers.{i}.{m}.weight" for m in LINEARS]
    return [*names, "model.norm.weight", "lm_head.weight"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = smollm2_names()
    assert len(names) == 273
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("inspect") / "smollm2-like.llmc"
    # stored in string order (layers.19 before layers.2), as a converter writes a GGUF
    return llmc_format.save_file({n: rng.standard_normal((4, 8)).astype(np.float32)
                                  for n in sorted(names)}, path, jobs=1)


def _lines_on_a_terminal(args: list[str], columns: int) -> list[str]:
    """Run ``llmc`` on a real pseudo-terminal ``columns`` wide; its output lines."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50", "NO_COLOR": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "llmc_format.cli", *args], stdout=follower,
                            stderr=follower, stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return text.split("\n")


def test_full_names_at_80_columns_each_on_its_own_line(archive: Path) -> None:
    lines = _lines_on_a_terminal(["inspect", str(archive)], 80)
    assert max(len(line) for line in lines[1:]) <= 80  # (line 0 holds the path given)
    stripped = {line.strip() for line in lines}
    missing = [n for n in smollm2_names() if n not in stripped]
    assert missing == []
    assert lines[0].startswith(f"{archive}: format ")
    assert any(line.startswith("policy:    lossless") for line in lines)


def test_full_names_through_a_pipe_one_tensor_per_line(archive: Path) -> None:
    r = CliRunner().invoke(app, ["inspect", str(archive)], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    rows = [line.split("\t") for line in r.output.splitlines()]
    assert rows[0][:3] == ["name", "dtype", "shape"]
    # every name in full, one per line, in natural order (layers.2 before layers.10)
    assert [row[0] for row in rows[1:]] == sorted(smollm2_names(), key=natural_key)
    layers = [row[0].split(".")[2] for row in rows[1:] if row[0].startswith("model.layers.")]
    assert list(dict.fromkeys(layers)) == [str(i) for i in range(30)]
    assert all(len(row) == len(rows[0]) for row in rows)
    grep = [row for row in rows if "layers.7.self_attn.q_proj" in row[0]]
    assert len(grep) == 1 and grep[0][1:3] == ["float32", "4x8"]


def test_filter_and_natural_sort(archive: Path) -> None:
    r = CliRunner().invoke(app, ["inspect", str(archive), "--filter", "*.mlp.up_proj*",
                                 "--sort", "name"])
    names = [line.split("\t")[0] for line in r.output.splitlines()[1:]]
    assert names == [f"model.layers.{i}.mlp.up_proj.weight" for i in range(30)]
    r = CliRunner().invoke(app, ["inspect", str(archive), "--sort", "nmae"])
    assert r.exit_code == 2 and "did you mean 'name'" in r.output


def test_natural_key_and_sorts() -> None:
    names = ["layers.10.w", "layers.2.w", "layers.1.w", "embed"]
    assert sorted(names, key=natural_key) == ["embed", "layers.1.w", "layers.2.w", "layers.10.w"]
    rows = [{"name": "a", "stored_bytes": 1, "bpw": 3.0, "snr_db": 20.0},
            {"name": "b", "stored_bytes": 9, "bpw": 2.0, "snr_db": None},
            {"name": "c", "stored_bytes": 5, "bpw": 4.0, "snr_db": 12.5}]
    assert [t["name"] for t in select(rows, sort="size")] == ["b", "c", "a"]
    assert [t["name"] for t in select(rows, sort="bpw")] == ["c", "a", "b"]
    assert [t["name"] for t in select(rows, sort="snr")] == ["c", "a", "b"]
    assert [t["name"] for t in select(rows, ["[ab]"])] == ["a", "b"]


def test_weighting_in_plain_words() -> None:
    assert "self-calibration" in weighting_words("calibration-self (auto)")
    assert "chosen by --weighting auto" in weighting_words("calibration-self (auto)")
    words = weighting_words("nmse (auto: no config.json (pack a directory))")
    assert words.startswith("relative error") and "no config.json (pack a directory)" in words
    assert weighting_words("mse").startswith("absolute error")


def test_unknown_tensor_name_suggests_the_closest(archive: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["extract", str(archive), "model.layers.3.mlp.up_proj.wieght",
                                 "-o", str(tmp_path / "t.npy")])
    assert r.exit_code == 3
    assert "did you mean 'model.layers.3.mlp.up_proj.weight'" in r.output


def test_default_order_is_natural_and_total() -> None:
    rows = [{"name": n, "stored_bytes": 1, "bpw": 1.0}
            for n in ("layers.10.w", "layers.2.w", "a01", "a1", "layers.1.w")]
    assert [t["name"] for t in select(rows)] == ["a01", "a1", "layers.1.w", "layers.2.w",
                                                 "layers.10.w"]
    # ties of a figure keep natural order, not the archive's
    assert [t["name"] for t in select(rows, sort="size")][-3:] == ["layers.1.w", "layers.2.w",
                                                                  "layers.10.w"]


def test_an_alias_row_fits_80_columns(tmp_path: Path) -> None:
    """A tied head's row names its target on a line of its own, not in the codec column
    (which pushed the row past 80 columns)."""
    from llmc_format.inspect_view import table

    rows = [{"name": "lm_head.weight", "dtype": "float32", "shape": [96, 64],
             "codec": "alias of model.embed_tokens.weight", "stored_bytes": 0, "bpw": 0.0}]
    for width in (80, 200):
        lines = table(rows, width)
        assert max(len(line) for line in lines) <= width
        assert "  alias of model.embed_tokens.weight" in lines


def test_header_says_when_a_target_pack_was_activation_aware() -> None:
    from llmc_format.inspect_view import header

    d = {"path": "m.llmc", "format_version": "1", "tensors": [{"codec": "diagscale+blockdct+vvc"}],
         "metadata": {"rd": {"target": {"kind": "bpw", "value": 3.0}, "passes": 1,
                             "weighting": "calibration-self (auto)",
                             "activation": {"alpha": 0.5, "tensors": 210}}}}
    lines = header(d)
    assert any(line.startswith("activation-aware: 210 Linear weights") for line in lines)
    assert "(E[x^2]/mean)^-0.5" in " ".join(lines)
    assert any("activation-weighted MSE" in line for line in lines)
    assert max(len(line) for line in lines[1:]) <= 80  # long facts continue under their label
    assert any(line.startswith("weighting: each tensor") for line in lines)
    assert any(line.startswith(" " * len("weighting: ")) and line.strip() for line in lines)
    # a repack's note: the multipliers kept from its input; without the alpha they were
    # made with (chosen by code) its allocation used the plain MSE
    d["metadata"]["rd"]["activation"] = {"alpha": 0.35, "tensors": 75,
                                         "multipliers": "kept from m4.llmc", "weighted_tensors": 75}
    assert ("activation-aware: 75 Linear weights coded through diagscale, column multipliers "
            "(E[x^2]/mean)^-0.35, kept from m4.llmc; RD distortion: activation-weighted MSE"
            in " ".join(" ".join(header(d)).split()))
    d["metadata"]["rd"]["activation"] = {"tensors": 3, "multipliers": "kept from q.llmc",
                                         "weighted_tensors": 0}
    assert ("activation-aware: 3 Linear weights coded through diagscale, column multipliers, "
            "kept from q.llmc; RD distortion: MSE" in " ".join(" ".join(header(d)).split()))
    del d["metadata"]["rd"]["activation"]
    assert not any(line.startswith("activation-aware") for line in header(d))
