"""Container round trips and validation, independent of any codec."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.container import layout
from llmc_format.container.index import TensorEntry
from llmc_format.container.reader import Reader
from llmc_format.container.writer import Writer, append_metadata_update
from llmc_format.errors import (
    ArchiveNotFoundError,
    ChecksumError,
    FormatError,
    LimitError,
    LlmcError,
    TruncatedError,
    VersionError,
)

#: digests are required of stored tensors (FORMAT.md §5.3); these tests never decode
NO_DIGEST = {"source": 0, "decoded": 0}


def make_archive(path: Path, blobs: dict[str, list[bytes]], alignment: int = 64,
                 metadata: dict | None = None, attachments: dict[str, bytes] | None = None) -> Path:
    with Writer(path, alignment=alignment, metadata=metadata or {"user": {"k": 1}}) as w:
        for name, parts in blobs.items():
            refs = tuple(w.add_blob(p) for p in parts)
            w.add_tensor(TensorEntry(name, "uint8", (sum(map(len, parts)),), ({"id": "exact"},), refs,
                                     digest=NO_DIGEST))
        for n, data in (attachments or {}).items():
            w.add_attachment(n, data)
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "a.llmc", {"a": [b"hello", b"world!!"], "b": [b"x" * 100]},
                        attachments={"config.json": b'{"a": 1}' * 20, "empty.txt": b""})


def test_round_trip_blobs_and_attachments(small: Path) -> None:
    with Reader(small) as r:
        assert r.keys() == ["a", "b"]
        a = r.tensor("a")
        assert [r.read_blob(b) for b in a.blobs] == [b"hello", b"world!!"]
        assert r.read_attachment("config.json") == b'{"a": 1}' * 20
        assert r.read_attachment("empty.txt") == b""
        assert r.metadata == {"user": {"k": 1}}
        for b in r.index.all_blobs():
            assert b[1].offset % 64 == 0


@settings(max_examples=30, deadline=None)
@given(
    parts=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    alignment=st.sampled_from([8, 64, 512, 4096]),
)
def test_round_trip_any_blobs(tmp_path_factory: pytest.TempPathFactory, parts: list[bytes],
                              alignment: int) -> None:
    path = tmp_path_factory.mktemp("h") / "x.llmc"
    make_archive(path, {"t": parts}, alignment=alignment)
    with Reader(path) as r:
        assert [r.read_blob(b) for b in r.tensor("t").blobs] == parts
        assert r.header.alignment == alignment


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    dst = tmp_path / "out.llmc"
    dst.write_bytes(b"previous")
    with pytest.raises(RuntimeError), Writer(dst) as w:
        w.add_blob(b"data")
        raise RuntimeError("boom")
    assert dst.read_bytes() == b"previous"
    assert not list(tmp_path.glob(".*partial"))


def test_duplicate_tensor_name_rejected_by_writer(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="already written"), Writer(tmp_path / "x.llmc") as w:
        w.add_tensor(TensorEntry("a", "uint8", (0,), ({"id": "exact"},)))
        w.add_tensor(TensorEntry("a", "uint8", (0,), ({"id": "exact"},)))


def test_metadata_update_appends(small: Path) -> None:
    size = small.stat().st_size
    prefix = small.read_bytes()[: size - layout.FOOTER_SIZE]
    append_metadata_update(small, metadata={"user": {"k": 2}, "note": "updated"})
    data = small.read_bytes()
    assert data.startswith(prefix)  # nothing before the old footer was rewritten
    with Reader(small) as r:
        assert r.metadata["note"] == "updated"
        assert r.index.previous is not None
        assert [r.read_blob(b) for b in r.tensor("a").blobs] == [b"hello", b"world!!"]
    append_metadata_update(small, metadata={"user": {"k": 3}})
    with Reader(small) as r:
        assert r.metadata["user"]["k"] == 3


# ------------------------------------------------------------------ malformed files


def rewrite_index(path: Path, mutate) -> None:
    """Rewrite the index with ``mutate(dict)`` applied and valid checksums (a 'lying' file)."""
    data = bytearray(path.read_bytes())
    footer = layout.Footer.unpack(bytes(data[-48:]), len(data) - 48)
    obj = msgpack.unpackb(bytes(data[footer.index_offset: footer.index_offset + footer.index_length]))
    mutate(obj)
    raw = msgpack.packb(obj, use_bin_type=True)
    new = layout.Footer(footer.index_offset, len(raw), layout.checksum(raw))
    path.write_bytes(bytes(data[: footer.index_offset]) + raw + new.pack())


def rewrite_header(path: Path, **fields) -> None:
    data = bytearray(path.read_bytes())
    h = layout.Header.unpack(bytes(data[:64]))
    vals = {"major": h.major, "minor": h.minor, "required_features": h.required_features,
            "optional_features": h.optional_features, "alignment": h.alignment, **fields}
    data[:64] = layout.Header(**vals).pack()
    path.write_bytes(bytes(data))


def test_truncated_at_every_offset_is_typed(small: Path, tmp_path: Path) -> None:
    data = small.read_bytes()
    bad = tmp_path / "t.llmc"
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        with pytest.raises(FormatError):
            Reader(bad).close()


def test_every_single_bit_flip_in_structures_is_detected(small: Path, tmp_path: Path) -> None:
    """Flip each bit of the file; opening plus reading every blob must fail, typed."""
    data = small.read_bytes()
    bad = tmp_path / "f.llmc"
    undetected = []
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            mutated = bytearray(data)
            mutated[pos] ^= 1 << bit
            bad.write_bytes(bytes(mutated))
            try:
                with Reader(bad) as r:
                    for label, b in r.index.all_blobs():
                        r.read_blob(b, label)
            except LlmcError:
                continue
            undetected.append((pos, bit))
    assert undetected == []


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda o: o["tensors"][1]["blobs"][0].update(offset=64), FormatError, "overlaps"),
        (lambda o: o["tensors"][1]["blobs"][0].update(offset=10**6), FormatError, "hole"),
        (lambda o: o["tensors"][0]["blobs"][0].update(length=2**40), FormatError, "overlaps|end"),
        (lambda o: o["tensors"].append(dict(o["tensors"][0])), FormatError, "duplicate"),
        (lambda o: o["tensors"][0].update(shape=[2**40, 2**40]), LimitError, "2\\*\\*62"),
        (lambda o: o["tensors"][0].update(shape=[1] * 17), LimitError, "rank"),
        (lambda o: o["tensors"][0].update(shape=[-1]), FormatError, "non-natural"),
        (lambda o: o["tensors"][0].update(name="n" * 2000), LimitError, "longer"),
        (lambda o: o["tensors"][0].update(dtype="complex256"), FormatError, "unknown dtype"),
        (lambda o: o["tensors"][0].update(pipeline=[]), LimitError, "stages"),
        (lambda o: o["tensors"][0].update(pipeline=[{"x": 1}]), FormatError, "'id'"),
        (lambda o: o["tensors"][0]["blobs"][0].update(stage=5), FormatError, "stage"),
        (lambda o: o["tensors"][0].update(alias_of="nope"), FormatError, "alias"),
        (lambda o: o.update(data_end=1), FormatError, "data_end"),
        (lambda o: o.update(tensors="x"), FormatError, "tensors"),
        (lambda o: o["attachments"][0].update(encoding="lzma"), FormatError, "encoding"),
        (lambda o: o.clear(), FormatError, "data_end"),
    ],
)
def test_lying_index_is_rejected(small: Path, mutate, error, match) -> None:
    rewrite_index(small, mutate)
    with pytest.raises(error, match=match):
        Reader(small)


def test_future_major_version(small: Path) -> None:
    rewrite_header(small, major=2)
    with pytest.raises(VersionError, match="newer reader"):
        Reader(small)


def test_future_minor_version_is_read(small: Path) -> None:
    rewrite_header(small, minor=7, optional_features=1 << 5)
    with Reader(small) as r:
        assert r.header.minor == 7


def test_unknown_required_feature(small: Path) -> None:
    rewrite_header(small, required_features=1 << 3)
    with pytest.raises(VersionError, match="required features 0x8"):
        Reader(small)


def test_text_mode_damage_is_named(small: Path) -> None:
    data = small.read_bytes().replace(b"\r\n", b"\n", 1)
    small.write_bytes(data)
    with pytest.raises(FormatError, match="text mode"):
        Reader(small)


def test_not_an_llmc_file(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 2) + b"{}" + b"\0" * 200)
    with pytest.raises(FormatError, match="not an llmc file"):
        Reader(p)
    with pytest.raises(ArchiveNotFoundError):
        Reader(tmp_path / "missing.llmc")
    with pytest.raises(FileNotFoundError):  # the stdlib type works too
        Reader(tmp_path / "missing.llmc")


def test_huge_index_length_is_refused_without_allocating(small: Path) -> None:
    data = bytearray(small.read_bytes())
    footer = layout.Footer(64, 2**60, 0)
    small.write_bytes(bytes(data[:-48]) + footer.pack())
    with pytest.raises(FormatError):
        Reader(small)


def test_reader_is_thread_safe(small: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Reader(small) as r:
        refs = [b for _, b in r.index.all_blobs()] * 50
        with ThreadPoolExecutor(4) as pool:
            out = list(pool.map(r.read_blob, refs))
        assert out[:2] == [b"hello", b"world!!"]
        assert len(out) == len(refs)


def test_salvage_mode_skips_checksums(small: Path) -> None:
    with Reader(small) as r:
        ref = r.tensor("a").blobs[0]
    data = bytearray(small.read_bytes())
    data[ref.offset] ^= 1
    small.write_bytes(bytes(data))
    with Reader(small) as r, pytest.raises(ChecksumError, match="checksum mismatch"):
        r.read_blob(ref)
    with Reader(small, verify_checksums=False) as r:
        assert r.read_blob(ref) == b"iello"


def test_truncated_error_is_format_error() -> None:
    assert issubclass(TruncatedError, FormatError)
    assert os.path.basename(__file__).startswith("test_")


def test_errors_opening_an_archive_name_the_file(small: Path, tmp_path: Path) -> None:
    # found by hand: `llmc verify a.llmc --against b.llmc` with b truncated said only "no
    # footer magic at offset ...": which of the two files? Every open error names its file.
    data = small.read_bytes()
    cases = {"truncated.llmc": (data[: len(data) - 7], TruncatedError),
             "text.llmc": (b"hello, not an archive" * 10, FormatError),
             "flipped.llmc": (data[:-60] + bytes([data[-60] ^ 1]) + data[-59:], FormatError)}
    for name, (content, kind) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(kind) as info:
            Reader(p)
        assert str(info.value).startswith(f"{p}: "), info.value
        assert str(info.value).count(str(p)) == 1, info.value
