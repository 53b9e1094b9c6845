"""The error taxonomy of spec/FORMAT.md §8.1 and the msgpack rules of §5, as the reader
applies them: which kind each damage gets, and that the index's msgpack is plain data."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

import llmc_format
from llmc_format import errors
from llmc_format.container import layout
from llmc_format.container.reader import Reader
from llmc_format.container.writer import Writer

SPEC_KINDS = {"Truncated", "Malformed", "Checksum", "Limit", "UnsupportedVersion",
              "UnsupportedCodec", "Decode", "DigestMismatch"}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "a.llmc"
    llmc_format.save_file({"w": np.arange(24, dtype=np.float32).reshape(4, 6),
                           "b": np.ones(3, dtype=np.int8)}, path, metadata={"k": "v"})
    return path


def _index(path: Path) -> tuple[bytes, layout.Footer]:
    data = path.read_bytes()
    footer = layout.Footer.unpack(data[-48:], len(data) - 48)
    return data[: footer.index_offset], footer


def _put_index(path: Path, raw: bytes) -> None:
    """Replace the index by ``raw`` with valid checksums: only the index content lies."""
    head, footer = _index(path)
    path.write_bytes(head + raw + layout.Footer(footer.index_offset, len(raw),
                                                layout.checksum(raw)).pack())


def _obj(path: Path) -> dict:
    _head, footer = _index(path)
    data = path.read_bytes()
    return msgpack.unpackb(data[footer.index_offset: footer.index_offset + footer.index_length])


def _kind(path: Path) -> str:
    with pytest.raises(errors.LlmcError) as info:
        Reader(path).close()
    return info.value.kind


def test_every_spec_kind_has_one_class() -> None:
    kinds = errors.by_kind()
    assert set(kinds) == SPEC_KINDS
    assert issubclass(kinds["Limit"], kinds["Malformed"])
    assert issubclass(kinds["DigestMismatch"], kinds["Decode"])


def _map_with_duplicate(obj: dict, key: str) -> bytes:
    """msgpack of ``obj`` with ``key`` written a second time (a value a reader could take)."""
    packer = msgpack.Packer(use_bin_type=True)
    out = packer.pack_map_header(len(obj) + 1)
    for k, v in obj.items():
        out += packer.pack(k) + packer.pack(v)
    return out + packer.pack(key) + packer.pack(obj[key])


def test_duplicate_top_level_key_is_malformed(archive: Path) -> None:
    _put_index(archive, _map_with_duplicate(_obj(archive), "data_end"))
    assert _kind(archive) == "Malformed"


def test_duplicate_key_in_a_tensor_entry_is_malformed(archive: Path) -> None:
    obj = _obj(archive)
    packer = msgpack.Packer(use_bin_type=True)
    entry = obj["tensors"][0]
    obj["tensors"][0] = msgpack.ExtType(99, b"")  # placeholder, replaced in the bytes
    raw = packer.pack(obj)
    placeholder = packer.pack(msgpack.ExtType(99, b""))
    assert raw.count(placeholder) == 1
    _put_index(archive, raw.replace(placeholder, _map_with_duplicate(entry, "dtype")))
    assert _kind(archive) == "Malformed"


@pytest.mark.parametrize("value", [msgpack.Timestamp(1, 0), msgpack.ExtType(5, b"x")])
def test_extension_types_are_malformed(archive: Path, value: object) -> None:
    obj = _obj(archive)
    obj["metadata"]["user"] = {"when": [value]}
    _put_index(archive, msgpack.packb(obj, use_bin_type=True))
    assert _kind(archive) == "Malformed"


def test_non_string_map_key_is_malformed(archive: Path) -> None:
    obj = _obj(archive)
    obj["metadata"]["user"] = {b"bytes-key": 1}
    _put_index(archive, msgpack.packb(obj, use_bin_type=True))
    assert _kind(archive) == "Malformed"


def test_header_and_footer_checksums_are_checksum_errors(archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    for pos in (20, len(data) - 48 + 3):  # a header byte, a footer byte
        bad = tmp_path / f"bad{pos}.llmc"
        bad.write_bytes(data[:pos] + bytes([data[pos] ^ 4]) + data[pos + 1:])
        assert _kind(bad) == "Checksum"


def test_reserved_header_bytes_under_a_valid_checksum_are_malformed(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    data[40] = 1
    data[56:64] = layout.checksum(bytes(data[:56])).to_bytes(8, "little")
    archive.write_bytes(bytes(data))
    assert _kind(archive) == "Malformed"


def test_padding_before_data_is_a_checksum_error(tmp_path: Path) -> None:
    path = tmp_path / "a.llmc"
    with Writer(path, alignment=4096):
        pass
    data = bytearray(path.read_bytes())
    data[100] = 7  # between the header and data_start = 4096
    path.write_bytes(bytes(data))
    assert _kind(path) == "Checksum"


def test_short_files(tmp_path: Path) -> None:
    p = tmp_path / "s.llmc"
    p.write_bytes(layout.MAGIC[:5])
    assert _kind(p) == "Truncated"  # a prefix of the magic: cut short
    p.write_bytes(b"hello")
    assert _kind(p) == "Malformed"  # not an llmc file at all
