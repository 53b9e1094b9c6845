"""``container.names``: the rules for tensor and attachment names, and the writer's use of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.container.names import (
    MAX_COMPONENT_BYTES,
    attachment_problem,
    check_attachment_set,
    path_problem,
)
from llmc_format.container.writer import Writer
from llmc_format.errors import FormatError
from llmc_format.pipeline.pack import encode_one, write_packed

OK = ["config.json", "tokenizer.json", "1_Pooling/config.json", "a/b/c.txt", "vocab.txt",
      "README.md", "sub/model.safetensors.txt", "é/ü.json", "x" * MAX_COMPONENT_BYTES,
      "sub/model.safetensors"]


@pytest.mark.parametrize("name", OK)
def test_ordinary_names_pass(name: str) -> None:
    assert attachment_problem(name) is None


@pytest.mark.parametrize(("name", "why"), [
    ("", "non-empty"), ("/etc/passwd", "absolute"), ("../x", "'..'"), ("a/../../x", "'..'"),
    ("a//b", "empty"), ("./a", "'.'"), ("a\\b", "forbidden"), ("a\x00b", "control"),
    ("a\nb", "control"), ("a\x1b[31m", "control"), ("c:x", "forbidden"), ("a|b", "forbidden"),
    ("x" * (MAX_COMPONENT_BYTES + 1), "256 bytes"), ("é" * 128, "256 bytes"),
    ("CON", "Windows device"), ("sub/aux.json", "Windows device"), ("lpt1.txt", "Windows"),
    ("trailing.", "dot or a space"), ("dir /x", "dot or a space"),
    ("model.safetensors", "weight file"), ("Model.SafeTensors", "weight file"),
    ("model-00001-of-00002.safetensors", "weight file"),
    ("model.safetensors.index.json", "weight file"), ("pytorch_model.bin", "weight file"),
    ("pytorch_model.bin.index.json", "weight file"), ("model.gguf", "weight file"),
    ("other.GGUF", "weight file"), (".llmc-unpack-stage", "staging marker"),
])
def test_unsafe_or_clashing_names_are_refused(name: str, why: str) -> None:
    problem = attachment_problem(name)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("names", [["a", "a/b"], ["a/b", "a"], ["x/y/z", "X/Y"],
                                   ["config.json", "Config.json"], ["t.json", "t.json"]])
def test_names_that_collide_on_disk_are_refused(names: list[str]) -> None:
    with pytest.raises(FormatError):
        check_attachment_set(names)


def test_siblings_and_nested_files_do_not_collide() -> None:
    check_attachment_set(["a/b", "a/c", "ab", "a.b", "x/y/z", "x/y/w"])


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_an_accepted_name_stays_inside_the_directory(name: str) -> None:
    """Whatever passes the check is a plain relative path of short, printable components."""
    if path_problem(name) is not None:
        return
    root = Path("/base")
    target = root.joinpath(*name.split("/"))
    assert target.is_relative_to(root) and target != root
    assert ".." not in target.parts and not Path(name).is_absolute()
    assert all(len(p.encode()) <= MAX_COMPONENT_BYTES for p in name.split("/"))
    assert not any(ord(c) < 0x20 for c in name)


def test_writer_never_writes_a_name_the_reader_refuses(tmp_path: Path) -> None:
    with Writer(tmp_path / "a.llmc") as w:
        with pytest.raises(FormatError, match="reserved"):
            write_packed(w, encode_one("__metadata__", np.zeros(2, np.float32), [{"id": "exact"}]))
        w.add_attachment("a", b"1")
        for bad in ("model.safetensors", "a/b", "A", "../x"):
            with pytest.raises(FormatError):
                w.add_attachment(bad, b"2")
        write_packed(w, encode_one("ok", np.zeros(2, np.float32), [{"id": "exact"}]))
