"""``llmc pack`` validates before any work: exit codes as the README says, nothing left
behind; and it writes the same bytes as ``llmc_format.pack`` with the same options."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("m")
    rng = np.random.default_rng(0)
    t = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((256, 256)).astype(np.float32)
         for i in range(3)}
    t["model.norm.weight"] = np.ones(256, np.float32)
    save_file(t, str(d / "model.safetensors"))
    return d / "model.safetensors"


def _pack(out_dir: Path, src: Path, *args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["pack", str(src), "-o", str(out_dir / "a.llmc"), "-q", *args])
    return r.exit_code, r.output


def _left(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir())


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--codec", "vvc", "--qp", "99"], 2, "--qp"),
    (["--codec", "vvc", "--bits", "20"], 2, "--bits"),
    (["--codec", "vcc"], 2, "did you mean 'vvc'"),
    (["--codec", "vvc", "--lossless", "model.norm.weigth"], 2, "did you mean 'model.norm.weight'"),
    (["--codec", "vvc", "--bpw", "3", "--size", "1MB"], 2, "one target"),
    (["--codec", "vvc", "--size", "0"], 2, "--size must be more than 0 bytes"),
    (["--codec", "vvc", "--size", "12 parsecs"], 2, "is not a size"),
    (["--codec", "vvc", "--weighting", "nsme", "--bpw", "3"], 2, "did you mean 'nmse'"),
    (["--bpw", "3"], 2, "needs a lossy codec"),
    (["--codec", "vvc", "--size", "1KB"], 3, "smallest this model packs to with these options is about"),
    (["--codec", "vvc", "--bpw", "0.01"], 3, "fewest bits per lossy weight"),
    (["--meta", "novalue"], 2, "KEY=VALUE"),
])
def test_bad_options_fail_before_work(model: Path, tmp_path: Path, args: list[str], code: int,
                                      says: str) -> None:
    exit_code, output = _pack(tmp_path, model, *args)
    assert exit_code == code, output
    assert says in output
    assert _left(tmp_path) == []  # no archive, no .partial, no journal, no RD work dir


def test_non_model_input_and_bad_outputs(model: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    r = runner.invoke(app, ["pack", str(text), "-o", str(tmp_path / "a.llmc")])
    assert r.exit_code == 3 and "unknown model file format" in r.output
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = runner.invoke(app, ["pack", str(model), "-o", str(out_dir), "-f"])
    assert r.exit_code == 3 and "is a directory" in r.output
    r = runner.invoke(app, ["pack", str(model), "-o", "-"])
    assert r.exit_code == 2 and "-o -" in r.output
    assert _left(tmp_path) == ["notes.txt", "out"] and _left(out_dir) == []
    assert not Path("-").exists()


def test_options_without_effect_warn(model: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["pack", str(model), "-o", str(tmp_path / "a.llmc"), "--qp", "30",
                            "--lossless", "*attn*"])  # not -q: that silences warnings
    code, output = r.exit_code, r.output
    assert code == 0
    assert "--qp has no effect with --codec exact" in output
    assert "--lossless '*attn*' matches no tensor" in output
    with llmc_format.safe_open(tmp_path / "a.llmc") as f:  # written lossless, as warned
        assert all(f.info(n)["pipeline"][0]["id"] == "exact" for n in f.keys())


def test_help_is_short_and_shows_choices() -> None:
    r = runner.invoke(app, ["pack", "-h"], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    assert "[exact|vvc|hevc|av1|ffv1]" in r.output and "<str>" not in r.output
    assert "llmc-format[ray]" in r.output and "Examples" in r.output


def _tiny_llama(d: Path, tok_dir: Path) -> Path:
    """A causal LM transformers can build, so ``weighting=auto`` self-calibrates."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=30522, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
    )).save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, d / f)
    return d


@pytest.mark.slow
def test_api_and_command_write_identical_bpw_archives(tmp_path: Path, minilm_dir: Path) -> None:
    src = _tiny_llama(tmp_path / "model", minilm_dir)
    a, b = tmp_path / "api.llmc", tmp_path / "cli.llmc"
    llmc_format.pack(src, a, codec="vvc", bpw=3)
    r = runner.invoke(app, ["pack", str(src), "-o", str(b), "--codec", "vvc", "--bpw", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()
    with llmc_format.safe_open(a) as f:  # both ran the command's default weighting
        assert f.metadata()["rd"]["weighting"] == "calibration-self (auto)"


def test_api_and_command_write_identical_qp_archives(model: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "api.llmc", tmp_path / "cli.llmc"
    llmc_format.pack(model, a, codec="vvc", qp=40, preset="faster")
    r = runner.invoke(app, ["pack", str(model), "-o", str(b), "--codec", "vvc", "--qp", "40",
                            "--preset", "faster", "-q"])
    assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()


def test_json_for_pack_unpack_verify(model: Path, tmp_path: Path) -> None:
    import json

    arc = tmp_path / "a.llmc"
    r = runner.invoke(app, ["pack", str(model), "-o", str(arc), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["wrote"] == str(arc) and d["tensors"] == 4 and d["file_bytes"] == arc.stat().st_size
    r = runner.invoke(app, ["unpack", str(arc), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["files"] == ["model.safetensors"] and (tmp_path / "out" / d["files"][0]).is_file()
    r = runner.invoke(app, ["verify", str(arc), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    r = runner.invoke(app, ["unpack", str(arc), "-o", "-"])
    assert r.exit_code == 2 and not Path("-").exists()


def test_quiet_and_verbose_before_or_after_the_command(model: Path, tmp_path: Path) -> None:
    """-q: errors only (no summary, no warning); -v: a line per tensor; global or per
    command; both at once is bad usage."""
    arc = tmp_path / "a.llmc"
    for args in (["-q", "pack", str(model), "-o", str(arc)],
                 ["pack", str(model), "-o", str(arc), "-q"]):
        r = runner.invoke(app, [*args, "-f", "--qp", "30"])  # --qp without a codec: a warning
        assert r.exit_code == 0 and r.output == "", r.output
    r = runner.invoke(app, ["-q", "pack", str(model), "-o", str(arc)])  # exists: an error
    assert r.exit_code == 3 and r.output.startswith("error:") and r.output.count("\n") == 1
    r = runner.invoke(app, ["pack", str(model), "-o", str(arc), "-f", "--qp", "30"])
    assert "warning: --qp has no effect" in r.output and "wrote" in r.output
    for args in (["-v", "verify", str(arc)], ["verify", str(arc), "-v"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        shown = [line for line in r.output.splitlines() if line.endswith("/4)")]
        assert [line.split()[2] for line in shown] == [
            "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight",
            "model.layers.2.mlp.up_proj.weight", "model.norm.weight"], r.output
    r = runner.invoke(app, ["-q", "verify", str(arc), "-v"])
    assert r.exit_code == 2 and "contradict" in r.output
    r = runner.invoke(app, ["--help"])
    assert "--quiet" in r.output and "--verbose" in r.output


COMMANDS = ("pack", "unpack", "inspect", "verify", "extract", "repack", "sign")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_help_has_examples_choices_and_no_type_placeholders(command: str) -> None:
    """``-h`` everywhere; flags show nothing after them, text options their choices or a
    metavar (never typer's ``<bool>``/``<str>``); every option says what it does."""
    import typer.main

    args = [command, "-h"] if command else ["-h"]
    r = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and "<str>" not in r.output, r.output
    assert "--quiet" in r.output or command in ("inspect", "extract", "sign")
    if command:
        assert "Examples:" in r.output
    group = typer.main.get_command(app)
    cmd = group.commands[command] if command else group  # type: ignore[attr-defined]
    undocumented = [p.name for p in cmd.params if not (p.help or "").strip()]
    assert undocumented == []


def test_unpack_help_names_its_choices() -> None:
    r = runner.invoke(app, ["unpack", "-h"], env={"COLUMNS": "80"})
    for choices in ("[safetensors|pt|gguf]", "[bf16|fp16|fp32]", "[auto|copy|drop]", "SIZE"):
        assert choices in r.output


def test_a_target_driving_a_tensor_below_a_sane_snr_warns(tmp_path: Path) -> None:
    """--bpw 1.3 of Gaussian weights leaves under 8 dB (at best 6 dB per bit): the pack succeeds,
    with a warning naming the SNR and how to find the tensors; not with -q."""
    src = tmp_path / "w.safetensors"
    save_file({"w": np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)},
              str(src))
    r = runner.invoke(app, ["pack", str(src), "-o", str(tmp_path / "w.llmc"), "--codec", "vvc",
                            "--bpw", "1.3", "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "warning: the target drives at least one tensor to" in r.output
    assert "llmc inspect --sort snr" in r.output
    [t] = llmc_format.inspect(tmp_path / "w.llmc")["tensors"]
    assert t["snr_db"] < 8.0 and f"{t['snr_db']:.2f} dB SNR" in r.output


def test_what_a_new_user_tripped_on(model: Path, tmp_path: Path) -> None:
    """inspect --rd of a lossless archive said nothing (an empty table); verify of a
    missing file ended in a bare 'FAILED'; a click usage error was a 5-line box."""
    arc = tmp_path / "a.llmc"
    assert runner.invoke(app, ["pack", str(model), "-o", str(arc), "-q"]).exit_code == 0
    r = runner.invoke(app, ["inspect", str(arc), "--rd"])
    assert r.exit_code == 0 and "has no RD records to show" in r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "gone.llmc")])
    assert r.exit_code == 1 and "FAILED: 1 problem with the file" in r.output
    for args in (["unpack", str(arc)], ["unpack", str(arc), "-o", "x", "--format", "onnx"],
                 ["--bogus"], ["bogus"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and r.output.startswith("error: ") and \
            r.output.count("\n") == 1, r.output
    assert "(see llmc unpack -h)" in runner.invoke(app, ["unpack", str(arc)],
                                                   prog_name="llmc").output


def test_the_pack_clock_and_progress_include_opening_the_source(
        model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by hand: SmolLM2's GGUF took 13 s to pack but the summary said 'in 2.2 s', and
    the terminal showed nothing for the first 10 s: opening a GGUF (its metadata, tokenizer
    and config through transformers) ran before the clock and the progress line started."""
    import json
    import re
    import time

    import llmc_format.io as io

    real = io.open_source

    def slow_open(*args: object, **kwargs: object) -> object:
        time.sleep(1.5)  # a GGUF's metadata and tokenizer being read
        return real(*args, **kwargs)

    monkeypatch.setattr(io, "open_source", slow_open)
    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("LLMC_PROGRESS_LOG", str(log))
    r = runner.invoke(app, ["pack", str(model), "-o", str(tmp_path / "a.llmc")])
    assert r.exit_code == 0, r.output
    took = re.search(r"wrote \S+ in\s+([0-9.]+) s:", r.output)
    assert took is not None and float(took.group(1)) >= 1.5, r.output
    first = json.loads(log.read_text().splitlines()[0])
    assert first[1] == "opening source" and first[2] == str(model), first


def test_a_lossless_archive_packs_lossy_like_a_model(model: Path, tmp_path: Path) -> None:
    """Found by hand: a lossless master copy could not be made lossy without unpacking it
    first: `repack` refuses an archive with no lossy tensor and `pack` did not read one."""
    master, lossy = tmp_path / "master.llmc", tmp_path / "q.llmc"
    assert runner.invoke(app, ["pack", str(model), "-o", str(master), "-q"]).exit_code == 0
    r = runner.invoke(app, ["repack", str(master), "-o", str(lossy), "--bpw", "4"])
    assert r.exit_code == 3 and f"llmc pack {master} -o {lossy} --codec vvc" in \
        " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["pack", str(master), "-o", str(lossy), "-q", "--codec", "vvc",
                            "--qp", "30"])
    assert r.exit_code == 0, r.output
    assert llmc_format.inspect(lossy)["summary"]["lossy_tensors"] == 3
    r = runner.invoke(app, ["verify", str(lossy), "--against", str(master)])
    assert r.exit_code == 0 and "3 lossy within their recorded error" in r.output, r.output
    r = runner.invoke(app, ["verify", str(lossy), "--against", str(model)])
    assert r.exit_code == 0, r.output


def test_the_target_line_shows_a_size_as_a_size(model: Path, tmp_path: Path) -> None:
    """Found by hand: `--size 10GB` was echoed 'RD target size=1e+10', and a target every
    tensor meets exact printed 'min SNR - dB'."""
    r = runner.invoke(app, ["pack", str(model), "-o", str(tmp_path / "a.llmc"), "--codec", "vvc",
                            "--size", "10GB"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "RD target size=10.00 GB:" in text and "e+" not in text, text
    assert "- dB" not in text and "no tensor lossy" in text, text


def test_a_target_the_file_lands_well_under_warns(tmp_path: Path) -> None:
    """--size above the whole model kept exact: the exact file, ~90% under the target, and a
    warning saying so and why (not with -q); a target it lands in the window of: none."""
    src = tmp_path / "w.safetensors"
    save_file({"w": np.random.default_rng(1).standard_normal((128, 256)).astype(np.float32)},
              str(src))
    out = tmp_path / "w.llmc"
    r = runner.invoke(app, ["pack", str(src), "-o", str(out), "--codec", "vvc", "--size", "1MB",
                            "-j", "1"])
    assert r.exit_code == 0, r.output
    pct = 100 * (1 - out.stat().st_size / 1e6)
    assert f"warning: the file is {pct:.1f}% under the --size target" in r.output
    r = runner.invoke(app, ["pack", str(src), "-o", str(tmp_path / "q.llmc"), "--codec", "vvc",
                            "--size", "1MB", "-j", "1", "-q"])
    assert r.exit_code == 0 and r.output == ""
    rng = np.random.default_rng(2)
    save_file({f"w{i}": (rng.standard_normal((128, 256)) * s).astype(np.float32)
               for i, s in enumerate((0.01, 0.02, 0.05, 0.1, 0.2))}, str(src))
    r = runner.invoke(app, ["pack", str(src), "-o", str(tmp_path / "b.llmc"), "--codec", "vvc",
                            "--bpw", "3", "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "under the --bpw target" not in r.output and "RD target bpw=3" in r.output


def test_an_output_ending_in_a_slash_is_not_written_as_a_file(model: Path, tmp_path: Path) -> None:
    """Found by hand: `llmc pack m -o newdir/` wrote a file named 'newdir' (the slash, which
    says the user meant a directory, was lost in Path('newdir/'))."""
    want = tmp_path / "newdir"
    for args in (["pack", str(model)], ["repack", str(model), "--bpw", "3"]):
        r = runner.invoke(app, [*args, "-o", f"{want}/"])
        assert r.exit_code == 3 and "names a directory" in r.output, r.output
        assert not want.exists()
    with pytest.raises(llmc_format.errors.LlmcError, match="names a directory"):
        llmc_format.pack(str(model), f"{want}/")
    assert not want.exists()
