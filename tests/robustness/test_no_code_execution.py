"""Hostile inputs cannot run code or write outside the output directory.

Torch checkpoints are pickles: ``llmc pack`` loads them with ``weights_only=True`` and a
pickle that would run code is refused (exit 3) before anything runs. Attachment names
come from the archive: ``llmc unpack`` refuses names that climb out of or bypass the
output directory, even when the index holding them has valid checksums.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.container.writer import Writer
from llmc_format.errors import FormatError
from llmc_format.pipeline.pack import encode_one, write_packed

runner = CliRunner()


class _Evil:
    """Unpickling this creates a directory: the proof that code ran."""

    marker = ""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.marker,))


def _evil(marker: Path) -> _Evil:
    e = _Evil()
    e.marker = str(marker)
    return e


@pytest.mark.parametrize("kind", ["zip", "legacy-pickle", "hf-dir"])
def test_pack_of_a_malicious_pickle_exits_3_without_running_it(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"w": torch.zeros(2), "x": _evil(marker)}
    src = tmp_path / "evil.bin"
    if kind == "legacy-pickle":
        with src.open("wb") as f:
            pickle.dump(payload, f, protocol=2)
    elif kind == "zip":
        torch.save(payload, src)
    else:
        src = tmp_path / "model"
        src.mkdir()
        torch.save(payload, src / "pytorch_model.bin")
    proof = tmp_path / "proof"  # the payload is live: plain unpickling runs it
    pickle.loads(pickle.dumps(_evil(proof)))
    assert proof.is_dir()
    out = tmp_path / "out.llmc"
    r = runner.invoke(app, ["pack", str(src), "-o", str(out), "-q"])
    assert r.exit_code == 3, r.output
    assert "weights_only" in r.output
    assert not marker.exists()
    assert not out.exists() and not list(tmp_path.glob(".out.llmc*"))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../evil", "../../evil", "a/../../evil", "/ABS/evil",
                                  "sub/../../evil", "./../evil", "..", "a//b", "a\\..\\evil"])
def test_unpack_refuses_attachment_names_that_escape(
        name: str, tmp_path: Path,
        rewrite_index: Callable[[Path, Callable[[dict[str, Any]], None]], None]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    abs_target = tmp_path / "abs_evil"
    name = name.replace("/ABS/evil", str(abs_target))
    with_attachment = work / "b.llmc"
    with Writer(with_attachment) as w:
        write_packed(w, encode_one("w", np.ones((2, 2), np.float32), [{"id": "exact"}]))
        w.add_attachment("config.json", b'{"evil": true}')
    rewrite_index(with_attachment, lambda o: o["attachments"][0].update(name=name))
    with pytest.raises(FormatError, match="attachment name"):  # refused at open (§5.5)
        llmc_format.safe_open(with_attachment)
    assert runner.invoke(app, ["verify", str(with_attachment), "-q"]).exit_code == 1
    before = _tree(tmp_path)
    out = work / "out"
    r = runner.invoke(app, ["unpack", str(with_attachment), "-o", str(out), "-q"])
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    created = _tree(tmp_path) - before
    assert all(p.startswith("work/out") for p in created), created
    assert not abs_target.exists() and not (tmp_path / "evil").exists()
    assert not (work / "evil").exists()


# --- config.json / tokenizer_config.json with auto_map: custom code is never imported ----

_EVIL_PY = '''
import pathlib
pathlib.Path({marker!r}).write_text("code from the archive ran")
from transformers import PretrainedConfig, PreTrainedTokenizer
class EvilConfig(PretrainedConfig):
    model_type = "llmc_evil"
class EvilTokenizer(PreTrainedTokenizer):
    pass
'''
_EVIL_CONFIG = {"model_type": "llmc_evil", "architectures": ["EvilModel"],
                "tie_word_embeddings": True,
                "auto_map": {"AutoConfig": "evil.EvilConfig",
                             "AutoModelForCausalLM": "evil.EvilModel",
                             "AutoTokenizer": ["evil.EvilTokenizer", None]}}
_EVIL_TOKENIZER_CONFIG = {"tokenizer_class": "EvilTokenizer",
                          "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}


def _evil_files(marker: Path) -> dict[str, bytes]:
    return {"config.json": json.dumps(_EVIL_CONFIG).encode(),
            "tokenizer_config.json": json.dumps(_EVIL_TOKENIZER_CONFIG).encode(),
            "evil.py": _EVIL_PY.format(marker=str(marker)).encode()}


@pytest.fixture
def evil_archive(tmp_path: Path) -> tuple[Path, Path]:
    """An archive with a tied tensor (an alias: unpack plans tied weights from config.json)
    and attachments that would run ``evil.py`` if transformers were allowed to."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.llmc"
    with Writer(path) as w:
        entry = write_packed(w, encode_one("model.embed_tokens.weight",
                                           np.ones((4, 2), np.float32), [{"id": "exact"}]))
        w.add_tensor(dataclasses.replace(entry, name="lm_head.weight", blobs=(), pipeline=(),
                                         alias_of="model.embed_tokens.weight", digest=None))
        for name, data in _evil_files(marker).items():
            w.add_attachment(name, data)
    return path, marker


@pytest.fixture
def yes_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer any "run custom code? [y/N]" prompt with yes."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))


def test_unpack_never_runs_config_auto_map(evil_archive: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil_archive
    out = tmp_path / "out"
    r = runner.invoke(app, ["unpack", str(path), "-o", str(out), "-q"], input="y\n" * 20)
    assert not marker.exists(), "unpack ran the archive's evil.py"
    assert "custom code" not in r.output and "[y/N]" not in r.output
    assert r.exit_code == 0, r.output  # unknown model type: the alias is written in full
    from safetensors.numpy import load_file as load_st

    assert set(load_st(out / "model.safetensors")) == {"model.embed_tokens.weight",
                                                        "lm_head.weight"}


@pytest.mark.usefixtures("yes_on_stdin")
@pytest.mark.parametrize("call", ["load_config", "load_tokenizer", "from_pretrained"])
def test_transformers_api_never_runs_archive_code(evil_archive: tuple[Path, Path],
                                                   call: str) -> None:
    from llmc_format import transformers as llmc_tf
    from llmc_format.errors import SourceError

    path, marker = evil_archive
    with pytest.raises(SourceError):
        getattr(llmc_tf, call)(path)
    assert not marker.exists()
    with pytest.raises(SourceError, match="trust_remote_code"):
        getattr(llmc_tf, call)(path, trust_remote_code=True)
    assert not marker.exists()


@pytest.mark.usefixtures("yes_on_stdin")
def test_pack_of_a_directory_with_auto_map_never_runs_it(tmp_path: Path) -> None:
    """Tied weights make pack ask transformers about the config (the ``tied`` record);
    ``--calibration`` / ``--weighting auto`` build the model from the directory's files."""
    from llmc_format.errors import SourceError
    from llmc_format.io import open_source
    from llmc_format.rd.calibration import SELF, sensitivities

    marker = tmp_path / "pwned"
    src = tmp_path / "model"
    src.mkdir()
    w = torch.ones(4, 2)
    torch.save({"model.embed_tokens.weight": w, "lm_head.weight": w}, src / "pytorch_model.bin")
    for name, data in _evil_files(marker).items():
        (src / name).write_bytes(data)
    out = tmp_path / "out.llmc"
    llmc_format.pack(src, out)
    assert not marker.exists()
    with llmc_format.safe_open(out) as f:
        assert f.info("lm_head.weight")["alias_of"] == "model.embed_tokens.weight"
        assert "evil.py" in f.attachments()  # stored as data, like any attachment
    with open_source(src) as source, pytest.raises(SourceError, match="model_type"):
        sensitivities(source, SELF, sequences=1, seq_len=4)
    assert not marker.exists()


@pytest.mark.usefixtures("yes_on_stdin")
def test_calibration_never_runs_archive_code(evil_archive: tuple[Path, Path]) -> None:
    """``repack --weighting auto`` / ``pack --calibration`` build the model from config.json."""
    from llmc_format.errors import SourceError
    from llmc_format.io.archive_source import ArchiveSource
    from llmc_format.rd.calibration import SELF, sensitivities

    path, marker = evil_archive
    with ArchiveSource(path) as src, pytest.raises(SourceError, match="model_type"):
        sensitivities(src, SELF, sequences=1, seq_len=4)
    assert not marker.exists()


@pytest.mark.parametrize("config, match", [
    (b"[" * 100_000 + b"]" * 100_000, "deeper than"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "deeper than"),
    (b'{"model_type": "llama", "x": "' + b"[" * 10_000 + b'"}', None),  # brackets in a string
    (b" " * (5 << 20), "limit"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[1, 2]", "not an object"),
])
def test_config_json_is_bounded_plain_json(config: bytes, match: str | None) -> None:
    from llmc_format.errors import SourceError
    from llmc_format.io.hfconfig import build_config, config_dict

    if match is None:
        assert config_dict(config)["model_type"] == "llama"
        assert type(build_config(config)).__name__ == "LlamaConfig"
        return
    with pytest.raises(SourceError, match=match):
        config_dict(config)


def test_unpack_of_deeply_nested_config_json_copies_it(tmp_path: Path) -> None:
    """A config.json nested 5000 deep (a RecursionError for json/transformers) is data:
    unpack copies it and writes the weights, one-line errors nowhere needed."""
    path = tmp_path / "deep.llmc"
    deep = b'{"a": ' * 5000 + b"1" + b"}" * 5000
    with Writer(path) as w:
        entry = write_packed(w, encode_one("a", np.ones((2, 2), np.float32), [{"id": "exact"}]))
        w.add_tensor(dataclasses.replace(entry, name="b", blobs=(), pipeline=(), alias_of="a",
                                         digest=None))
        w.add_attachment("config.json", deep)
    out = tmp_path / "out"
    for fmt, dtype in (("safetensors", "fp16"), ("gguf", None)):
        args = ["unpack", str(path), "-o", str(out / fmt), "-q", "--format", fmt]
        r = runner.invoke(app, args + (["--dtype", dtype] if dtype else []))
        assert r.exit_code == 0, r.output
        assert (out / fmt / "config.json").read_bytes() == deep
