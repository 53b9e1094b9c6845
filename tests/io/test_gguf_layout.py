"""The GGUF layout record: prefix, gaps (any bytes), tail and inline tensors come back."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from llmc_format.errors import CodecError
from llmc_format.io.gguf_layout import layout_record, parse_record, rebuild, referenced


@dataclass
class FakeType:
    name: str


@dataclass
class FakeTensor:
    """What ``layout_record`` reads of a ``gguf.GGUFReader`` tensor."""

    name: str
    data_offset: int
    n_bytes: int
    tensor_type: FakeType


def _file(tmp_path: Path) -> tuple[Path, list[FakeTensor], bytes, bytes]:
    prefix, a, gap, b, tail = b"GGUF-header" + b"\0" * 5, b"A" * 40, b"\x07\0\x09", b"B" * 17, b"\xff"
    data = prefix + a + gap + b + tail
    path = tmp_path / "f.gguf"
    path.write_bytes(data)
    tensors = [FakeTensor("b", len(prefix) + len(a) + len(gap), len(b), FakeType("I8")),
               FakeTensor("a", len(prefix), len(a), FakeType("Q8_0"))]  # not in data order
    return path, tensors, a, data


def test_rebuild_is_byte_identical_with_gaps_and_inline_tensors(tmp_path: Path) -> None:
    path, tensors, a, data = _file(tmp_path)
    rec = parse_record(layout_record(path, tensors, 16, {"a": "archive.a"}))
    assert referenced(rec) == {"archive.a": ("Q8_0", 40)}
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    out = bytearray()
    digest = rebuild(rec, {"archive.a": a}.__getitem__, out.extend)
    assert bytes(out) == data and digest == rec["sha256"]


def test_rebuild_refuses_wrong_sizes(tmp_path: Path) -> None:
    path, tensors, a, _ = _file(tmp_path)
    rec = parse_record(layout_record(path, tensors, 16, {"a": "archive.a"}))
    with pytest.raises(CodecError, match="40"):
        rebuild(rec, lambda name: a[:-1], lambda b: None)


def test_parse_rejects_inconsistent_records(tmp_path: Path) -> None:
    path, tensors, _, _ = _file(tmp_path)
    good = msgpack.unpackb(layout_record(path, tensors, 16, {}), raw=False)
    for bad in ({**good, "version": 2}, {**good, "size": good["size"] + 1},
                {**good, "prefix": "text"}, {**good, "tensors": [{"name": "x"}]}):
        with pytest.raises(CodecError):
            parse_record(msgpack.packb(bad, use_bin_type=True))
    with pytest.raises(CodecError):
        parse_record(b"\xc1")
    raw = msgpack.packb(good, use_bin_type=True)
    for bad_bytes in (raw + b"\x00",  # trailing bytes
                      raw.replace(b"\xa4tail", b"\xa4size", 1),  # 'size' twice
                      msgpack.packb({**good, "user": msgpack.ExtType(5, b"x")}, use_bin_type=True),
                      msgpack.packb({**good, "sha256": good["sha256"].upper()}, use_bin_type=True),
                      msgpack.packb({**good, "size": True}, use_bin_type=True),
                      msgpack.packb({**good, "version": 1.0}, use_bin_type=True),
                      msgpack.packb({**good, "tensors": [{**good["tensors"][0], "tensor": "t"}]},
                                    use_bin_type=True)):  # both 'data' and 'tensor'
        with pytest.raises(CodecError) as info:
            parse_record(bad_bytes)
        assert info.value.kind == "Decode"


def test_wrong_sha256_is_a_digest_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    """spec/FORMAT.md §7.8: a rebuilt file whose SHA-256 differs from the record's is
    ``DigestMismatch``, and it is never published."""
    from llmc_format.errors import DigestError
    from llmc_format.io.gguf_sink import write_gguf_original

    path, tensors, a, _ = _file(tmp_path)
    rec = parse_record(layout_record(path, tensors, 16, {"a": "archive.a"}))
    rec["sha256"] = "0" * 64
    out = tmp_path / "out"
    with pytest.raises(DigestError) as info:
        write_gguf_original(rec, {"archive.a": a}.__getitem__, out)
    assert info.value.kind == "DigestMismatch"
    assert list(out.iterdir()) == []


def _record(**extra: object) -> dict:
    return {"version": 1, "size": 0, "sha256": "0" * 64, "prefix": b"", "tensors": [],
            "tail": b"", **extra}


@pytest.mark.parametrize(("containers", "ok"), [(69_000, True), (72_000, False)])
def test_container_budget_is_the_index_one_and_a_decode_error(containers: int, ok: bool) -> None:
    """FORMAT.md §7.8 (revision 1.7): at most floor(length / 16) + 65,536 maps and arrays,
    the top-level map included, as §8 step 4 (revision 1.6 said /8, which would accept
    72,000); over it is ``Decode`` of the attachment, not ``Limit``."""
    data = msgpack.packb(_record(unknown=[[] for _ in range(containers)]))
    assert (containers + 2 <= len(data) // 16 + 65_536) is ok  # the test sits on the edge
    assert (containers + 2 <= len(data) // 8 + 65_536)  # ... which /8 would not see
    if ok:
        assert parse_record(data)["version"] == 1
    else:
        with pytest.raises(CodecError) as info:
            parse_record(data)
        assert info.value.kind == "Decode"


def test_invalid_utf8_anywhere_in_the_record_is_a_decode_error() -> None:
    data = msgpack.packb(_record(unknown="\u00e9"))
    bad = data.replace("\u00e9".encode(), b"\xe9\xff")
    assert len(bad) == len(data) and bad != data  # same str length, bytes not UTF-8
    with pytest.raises(CodecError):
        parse_record(bad)


def test_a_data_entry_may_name_any_ggml_type(tmp_path: Path) -> None:
    """§7.8 (revision 1.7): a ``data`` entry's ``type`` is not interpreted, so a GGUF
    tensor of a type newer than §7.6's table still rebuilds; only ``tensor`` entries
    are compared with a stage config."""
    blob = b"\x01\x02\x03"
    rec = _record(size=3, sha256=hashlib.sha256(blob).hexdigest(),
                  tensors=[{"name": "new", "type": "Q9_FUTURE", "size": 3, "data": blob}])
    parsed = parse_record(msgpack.packb(rec, use_bin_type=True))
    assert referenced(parsed) == {}
    out: list[bytes] = []
    assert rebuild(parsed, lambda name: b"", lambda b: out.append(bytes(b))) == rec["sha256"]
    assert b"".join(out) == blob
